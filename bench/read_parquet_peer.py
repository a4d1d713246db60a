"""Peer for `mimo prepare` at paper scale: read every Stage-1 Parquet file of bench/paper_scale.py's output once with
pyarrow alone (both text columns, in batches), nothing else.

    nice -n 5 .venv/bin/python bench/read_parquet_peer.py work/ps10
"""

import glob
import resource
import sys
import time

import pyarrow.parquet as pq

root = sys.argv[1] if len(sys.argv) > 1 else "work/paper_scale"
t, c, n = time.perf_counter(), time.process_time(), 0
for f in sorted(glob.glob(f"{root}/parallel-sentences-*/en-*/*.parquet")):
    for b in pq.ParquetFile(f).iter_batches(batch_size=65536, columns=["english", "non_english"]):
        n += b.num_rows
print(f"pyarrow alone: {n:,} rows in {time.perf_counter()-t:.1f} s wall, {time.process_time()-c:.1f} CPU s, "
      f"peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/2**20:.2f} GB")
