import numpy as np
import pytest
import torch

from securefl.errors import InvalidInput, SpecMismatch
from securefl.rounds.chunks import join_array, split_array
from securefl.tensors import flatten, unflatten


def test_torch_state_dict_round_trips_with_integer_buffers():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    model(torch.randn(5, 4))  # bumps num_batches_tracked
    state = model.state_dict()
    vector, spec = flatten(state)
    assert vector.dtype == np.float64 and vector.size == spec.size == sum(t.numel() for t in state.values())
    rebuilt = unflatten(vector, spec)
    assert list(rebuilt) == list(state)
    for name, tensor in state.items():
        assert isinstance(rebuilt[name], torch.Tensor)
        assert rebuilt[name].dtype == tensor.dtype and torch.equal(rebuilt[name], tensor)
    assert rebuilt["1.num_batches_tracked"].dtype == torch.int64


@pytest.mark.parametrize("dtypes, expected", [
    ((np.float32,), np.float32), ((np.float32, np.float16, np.int16, np.bool_), np.float32),
    ((np.float32, np.float64), np.float64), ((np.float32, np.int32), np.float64), ((np.int64,), np.float64),
])
def test_a_model_flattens_to_the_narrowest_float_that_holds_every_value_exactly(dtypes, expected):
    arrays = {f"t{i}": np.array([-(2**15) + 1, 3, 2**15 - 1]).astype(dtype) for i, dtype in enumerate(dtypes)}
    vector, spec = flatten(arrays)
    assert vector.dtype == expected
    rebuilt = unflatten(vector, spec)
    assert all(rebuilt[name].dtype == array.dtype and np.array_equal(rebuilt[name], array)
               for name, array in arrays.items())


def test_integer_tensors_are_rounded_back_to_their_dtype():
    vector, spec = flatten({"count": np.array([3], dtype=np.int64), "w": np.zeros(2, dtype=np.float32)})
    rebuilt = unflatten(vector + 0.4, spec)
    assert rebuilt["count"].dtype == np.int64 and rebuilt["count"][0] == 3
    assert rebuilt["w"].dtype == np.float32


def test_numpy_dict_and_list_come_back_in_kind(rng):
    arrays = [rng.normal(size=(2, 3)), rng.normal(size=5).astype(np.float32)]
    vector, spec = flatten(arrays)
    rebuilt = unflatten(vector, spec)
    assert isinstance(rebuilt, list) and all(np.array_equal(a, b) for a, b in zip(arrays, rebuilt))
    as_dict = unflatten(*flatten({"a": arrays[0]}))
    assert isinstance(as_dict, dict) and np.array_equal(as_dict["a"], arrays[0])


def test_spec_hash_ignores_container_kind_but_not_structure():
    torch_spec = flatten({"w": torch.zeros(2, 3)})[1]
    numpy_spec = flatten({"w": np.zeros((2, 3), dtype=np.float32)})[1]
    torch_spec.check_matches(numpy_spec)
    with pytest.raises(SpecMismatch):
        torch_spec.check_matches(flatten({"w": np.zeros((3, 2), dtype=np.float32)})[1])
    with pytest.raises(SpecMismatch):
        torch_spec.check_matches(flatten({"v": np.zeros((2, 3), dtype=np.float32)})[1])


@pytest.mark.parametrize("bad", [{}, [], "weights", {"w": np.array(["a"])}, {"w": np.array([np.nan])}])
def test_unusable_updates_are_refused_with_a_clear_error(bad):
    with pytest.raises(InvalidInput):
        flatten(bad)


def test_unflatten_refuses_a_vector_of_the_wrong_length():
    vector, spec = flatten({"w": np.zeros(4)})
    with pytest.raises(InvalidInput, match="4"):
        unflatten(vector[:3], spec)


def test_a_single_array_or_tensor_comes_back_as_one(rng):
    array = rng.normal(size=(3, 2))
    assert np.array_equal(unflatten(*flatten(array)), array)
    tensor = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    rebuilt = unflatten(*flatten(tensor))
    assert isinstance(rebuilt, torch.Tensor) and torch.equal(rebuilt, tensor)


@pytest.mark.parametrize("dtype", ["<f4", "<f8"])
def test_a_result_is_rebuilt_from_its_chunks_and_one_of_the_wrong_length_is_refused(rng, dtype):
    vector = rng.normal(size=1000).astype(dtype)
    chunks = split_array(vector, 300)
    assert np.array_equal(join_array(chunks, dtype, 1000), vector)
    with pytest.raises(InvalidInput, match="expected 1000"):
        join_array(chunks[:-1], dtype, 1000)
    with pytest.raises(InvalidInput, match="expected 1000"):
        join_array(chunks + [chunks[0][:3]], dtype, 1000)
    with pytest.raises(InvalidInput, match="not one of"):
        join_array(chunks, "<i4", 1000)
