"""Gradient caching (Gao et al., 2021): a large contrastive batch in small mini-batches, same gradients.

The step, in four named parts:
1. `split`: cut every input of the batch into mini-batches;
2. `forward_no_grad`: encode each mini-batch without a graph, remembering its RNG state;
3. `build_cache`: compute the loss on the concatenated representations (leaf tensors) and
   backpropagate to them: their gradients are the cache;
4. `forward_backward`: encode each mini-batch again with a graph, replaying its RNG state so
   dropout masks match the first pass, and backpropagate the cached gradients into the model.

The loss is an ordinary callable on whole-batch tensors: one implementation serves the cached and
the plain path, so the two cannot drift apart.

Why not the `gradcache` package (luyug's GradCache on PyPI): its class import is broken as shipped,
and its functional `cached` decorator builds `RandContext()` without tensors, which captures no
CUDA device: on a GPU the second forward draws new dropout masks and the gradients are wrong.
`RngState` below captures the CPU generator and every initialized CUDA device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch


class RngState:
    """The CPU and CUDA generator states at creation; `replay()` re-runs code from that state."""

    def __init__(self):
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None

    @contextlib.contextmanager
    def replay(self):
        devices = list(range(len(self.cuda))) if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices, enabled=True):  # the outer RNG stream is left as it was
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state_all(self.cuda)
            yield


def split(tensors: Sequence[torch.Tensor], chunk_size: int) -> list[tuple[torch.Tensor, ...]]:
    """Mini-batches of `chunk_size` rows, each a tuple of the aligned slices of `tensors`."""
    n = tensors[0].shape[0]
    return [tuple(t[i:i + chunk_size] for t in tensors) for i in range(0, n, chunk_size)]


def forward_no_grad(encode: Callable, chunks) -> tuple[list[tuple[torch.Tensor, ...]], list[RngState]]:
    reps, states = [], []
    for chunk in chunks:
        states.append(RngState())
        with torch.no_grad():
            out = encode(*chunk)
        reps.append(out if isinstance(out, tuple) else (out,))
    return reps, states


def build_cache(reps_by_input: list[list[tuple[torch.Tensor, ...]]], loss_fn: Callable, loss_scale: float = 1.0):
    """Loss on whole-batch leaf representations; returns (what loss_fn returned, detached; per-input
    per-chunk gradient tuples). loss_fn returns the loss, or a dict of terms whose "loss" is backpropagated."""
    leaves = [[tuple(r.detach().requires_grad_() for r in chunk) for chunk in reps] for reps in reps_by_input]
    whole = [tuple(torch.cat([chunk[k] for chunk in input_leaves]) for k in range(len(input_leaves[0])))
             for input_leaves in leaves]
    out = loss_fn(*whole)
    loss = out["loss"] if isinstance(out, dict) else out
    (loss * loss_scale).backward()
    # None where the loss did not use a representation (e.g. the projection under plain InfoNCE)
    grads = [[tuple(leaf.grad for leaf in chunk) for chunk in input_leaves] for input_leaves in leaves]
    out = {k: v.detach() for k, v in out.items()} if isinstance(out, dict) else out.detach()
    return out, grads


def forward_backward(encode: Callable, chunks, states: list[RngState], grads, no_sync: Callable | None = None,
                     last: bool = True) -> None:
    """Second pass with a graph; d(loss)/d(params) = sum over chunks of <reps, cached grads>."""
    for i, (chunk, state, grad) in enumerate(zip(chunks, states, grads)):
        final = last and i == len(chunks) - 1
        # DDP: all-reduce gradients once, on the very last backward of the step
        sync = contextlib.nullcontext() if (no_sync is None or final) else no_sync()
        with sync, state.replay():
            out = encode(*chunk)
            out = out if isinstance(out, tuple) else (out,)
            terms = [(r * g).sum() for r, g in zip(out, grad) if g is not None]
            if terms:
                sum(terms).backward()


def plain_step(encode: Callable, inputs: Sequence[Sequence[torch.Tensor]], loss_fn: Callable,
               loss_scale: float = 1.0) -> torch.Tensor | dict[str, torch.Tensor]:
    """One forward with a graph per input, the loss, one backward: what gradient caching computes in
    three passes (the same dropout masks: the inputs are encoded in the same order from the same RNG state).
    Returns what loss_fn returned (the loss, or a dict of terms with the loss under "loss"), detached."""
    reps = []
    for tensors in inputs:
        out = encode(*tensors)
        reps.append(out if isinstance(out, tuple) else (out,))
    out = loss_fn(*reps)
    loss = out["loss"] if isinstance(out, dict) else out
    (loss * loss_scale).backward()
    return {k: v.detach() for k, v in out.items()} if isinstance(out, dict) else out.detach()


def cached_step(encode: Callable, inputs: Sequence[Sequence[torch.Tensor]], loss_fn: Callable, chunk_size: int,
                loss_scale: float = 1.0, no_sync: Callable | None = None) -> torch.Tensor | dict[str, torch.Tensor]:
    """One gradient-cached step over several encoder inputs (e.g. queries and passages).

    encode(*chunk_tensors) -> representation tensor(s) for one mini-batch of one input;
    inputs: per input, its aligned tensors (e.g. input_ids, attention_mask);
    loss_fn(*whole_reps): the loss on each input's concatenated representation tuple, or a dict of
    terms with the loss under "loss" (a loss returns its terms; nothing leaves through a side effect).
    Gradients accumulate into the model's .grad as `(loss * loss_scale).backward()` on the full
    batch would; returns what loss_fn returned, detached (the loss unscaled). When every input fits in one chunk, the step is that
    plain forward and backward (`plain_step`): caching would only add a second forward pass. Not
    under DDP (`no_sync` given), whose reducer expects one forward per backward.
    """
    if no_sync is None and all(tensors[0].shape[0] <= chunk_size for tensors in inputs):
        return plain_step(encode, inputs, loss_fn, loss_scale)
    chunked = [split(tensors, chunk_size) for tensors in inputs]
    passes = [forward_no_grad(encode, chunks) for chunks in chunked]
    out, grads = build_cache([reps for reps, _ in passes], loss_fn, loss_scale)
    for k, (chunks, (_, states)) in enumerate(zip(chunked, passes)):
        forward_backward(encode, chunks, states, grads[k], no_sync, last=k == len(chunked) - 1)
    return out
