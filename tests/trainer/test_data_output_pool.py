"""CPU model inputs come from `OutputPool`: reused only when nothing holds them, never overwritten.

`to_model_inputs` on CPU writes into tensors of earlier batches that the training loop has let
go of. Each way of holding on to a batch's inputs (the dict, one tensor, a view, a numpy view,
autograd's saved tensors) must keep them intact, and a usual loop must settle on few buffers.
"""

from __future__ import annotations

import numpy as np
import torch

from trainer.data.normalize import OutputPool, to_model_inputs
from trainer.data.sample import SampleSpec

TASK = "AERIAL_LABEL-COSIA"
SPEC = SampleSpec(inputs=("X",), tasks=(TASK,), channels={}, label_channels={TASK: 1}, norm_type="custom",
                  means={"X": (106.59, 105.66, 111.35)}, stds={"X": (39.78, 52.23, 45.62)})


def _batch(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"patch_id": [f"p{seed}-{i}" for i in range(2)], "valid": torch.ones(2, dtype=torch.bool),
            "X": torch.from_numpy(rng.integers(0, 256, (2, 3, 40, 40), dtype=np.uint8)),
            TASK: torch.from_numpy(rng.integers(0, 19, (2, 40, 40), dtype=np.uint8))}


def _expected(seed: int) -> dict:
    return to_model_inputs(_batch(seed), SPEC, "cpu")  # no pool: fresh tensors


def _same(got: dict, want: dict) -> bool:
    return all(torch.equal(got[k], want[k]) and got[k].dtype == want[k].dtype for k in ("X", TASK))


def test_values_and_dtypes_equal_the_unpooled_path():
    pool = OutputPool()
    for seed in range(4):
        assert _same(to_model_inputs(_batch(seed), SPEC, "cpu", pool=pool), _expected(seed))


def test_a_usual_loop_settles_on_two_buffers_per_key():
    pool, pointers = OutputPool(), set()
    for seed in range(8):
        inputs = to_model_inputs(_batch(seed), SPEC, "cpu", pool=pool)  # the previous dict is held during the call
        pointers.add(inputs["X"].data_ptr())
        assert _same(inputs, _expected(seed))
    assert len(pointers) == 2


def test_kept_batches_are_never_overwritten():
    pool = OutputPool(per_key=2)
    kept = [to_model_inputs(_batch(seed), SPEC, "cpu", pool=pool) for seed in range(5)]
    for seed, inputs in enumerate(kept):
        assert _same(inputs, _expected(seed))


def test_a_kept_tensor_view_numpy_view_or_saved_tensor_keeps_its_values():
    pool = OutputPool()
    inputs = to_model_inputs(_batch(0), SPEC, "cpu", pool=pool)
    label = inputs[TASK]  # one tensor of the dict
    inputs = to_model_inputs(_batch(1), SPEC, "cpu", pool=pool)
    view = inputs["X"][0]  # a view: shares the storage only
    inputs = to_model_inputs(_batch(2), SPEC, "cpu", pool=pool)
    array = inputs["X"].numpy()  # numpy's view holds the tensor object
    inputs = to_model_inputs(_batch(3), SPEC, "cpu", pool=pool)
    w = torch.ones(3, 1, 1, requires_grad=True)
    loss = (inputs["X"] * w).sum()  # autograd saves inputs["X"] for w's gradient
    grad_want = inputs["X"].sum(dim=(0, 2, 3)).view(3, 1, 1).clone()
    del inputs
    for seed in range(4, 8):  # enough calls to reuse any buffer that looked free
        to_model_inputs(_batch(seed), SPEC, "cpu", pool=pool)
    assert torch.equal(label, _expected(0)[TASK])
    assert torch.equal(view, _expected(1)["X"][0])
    assert np.array_equal(array, _expected(2)["X"].numpy())
    loss.backward()
    assert torch.equal(w.grad, grad_want)


def test_a_new_batch_size_gets_its_own_buffers():
    pool = OutputPool()
    a = to_model_inputs(_batch(0), SPEC, "cpu", pool=pool)
    b = _batch(1)
    b = {k: (v[:1] if isinstance(v, torch.Tensor) else v[:1]) for k, v in b.items()}
    got = to_model_inputs(b, SPEC, "cpu", pool=pool)
    assert got["X"].shape[0] == 1 and _same(a, _expected(0))


def test_a_free_tensor_is_handed_out_again_unless_torch_lacks_the_storage_counter(monkeypatch):
    pool = OutputPool()
    first = pool.take("k", (4, 4), torch.float32)
    assert pool.take("k", (4, 4), torch.float32) is not first  # held by `first`
    del first
    again = pool.take("k", (4, 4), torch.float32)
    assert again is pool._tensors[("k", (4, 4), torch.float32)][0]
    del again
    monkeypatch.delattr(torch._C, "_storage_Use_Count")
    held = [id(t) for t in pool._tensors[("k", (4, 4), torch.float32)]]  # ids: no extra references
    assert id(pool.take("k", (4, 4), torch.float32)) not in held
