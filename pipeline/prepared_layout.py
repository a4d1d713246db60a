"""The prepared folder's layout, named once for its writer (pipeline/prepare.py) and its readers
(the trainer, the model card, the cache export):

    stage1/pairs.parquet                  Stage-1 pairs (t_en, t_XX) in training order
    stage1/report.json                    rows dropped by each filter, per language
    stage2/{mimo,infonce,lakda}.parquet   the same instances under each composition
    stage2/report.json                    pair counts and counted skips
    teacher_worklist.parquet              unique English texts the teacher must encode
    config.json                           the resolved config
"""

from __future__ import annotations

from pathlib import Path

STAGE1_DIR, STAGE2_DIR = "stage1", "stage2"
STAGE1_PAIRS = f"{STAGE1_DIR}/pairs.parquet"
REPORT = "report.json"  # in each stage's folder
TEACHER_WORKLIST = "teacher_worklist.parquet"
# Stage 2's training methods -> the composition (table) each one trains on
METHOD_COMPOSITION = {"mimo": "mimo", "xlco": "mimo", "infonce": "infonce", "lakda": "lakda"}


def stage1_pairs(prepared: str | Path) -> Path:
    return Path(prepared) / STAGE1_PAIRS


def stage2_table(prepared: str | Path, composition: str) -> Path:
    """stage2/<composition>.parquet; a method's table is stage2_table(p, METHOD_COMPOSITION[method])."""
    return Path(prepared) / STAGE2_DIR / f"{composition}.parquet"


def report(prepared: str | Path, stage: str) -> Path:
    return Path(prepared) / stage / REPORT


def teacher_worklist(prepared: str | Path) -> Path:
    return Path(prepared) / TEACHER_WORKLIST
