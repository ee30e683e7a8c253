"""Tensors from Python: factories, autograd, errors, and memory shared with NumPy and PyTorch."""
import gc

import numpy as np
import pytest

import kasmina


def test_factories_have_the_requested_shape_dtype_and_values():
    t = kasmina.full([2, 3], 1.5, dtype=kasmina.float64)
    assert t.shape == (2, 3) and t.dtype == kasmina.float64 and t.device == "cpu"
    assert t.tolist() == [[1.5] * 3] * 2
    assert kasmina.arange(5).tolist() == [0, 1, 2, 3, 4]
    assert kasmina.zeros([4], requires_grad=True).requires_grad
    assert kasmina.tensor([[1, 2], [3, 4]]).dtype == kasmina.int64
    assert kasmina.tensor([0.5, 1.0]).dtype == kasmina.float32


def test_from_numpy_shares_memory_both_ways():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    tensor = kasmina.from_numpy(array)
    assert tensor.data_ptr() == array.ctypes.data
    array[0, 0] = 42.0
    assert tensor.tolist()[0][0] == 42.0
    tensor.fill_(7.0)
    assert (array == 7.0).all()


def test_numpy_view_of_a_tensor_shares_memory_and_keeps_strides():
    tensor = kasmina.zeros([2, 3])
    view = np.asarray(tensor)
    view[1, 2] = 5.0
    assert tensor.tolist()[1][2] == 5.0
    transposed = np.asarray(tensor.t())
    assert transposed.shape == (3, 2) and transposed[2, 1] == 5.0
    assert transposed.ctypes.data == view.ctypes.data


def test_shared_memory_outlives_the_handle_it_came_from():
    tensor = kasmina.from_numpy(np.full(1000, 3.0, dtype=np.float64))  # the array has no other reference
    gc.collect()
    assert kasmina.sum(tensor).item() == 3000.0
    array = np.asarray(kasmina.ones([1000]))  # the tensor has no other reference
    gc.collect()
    assert array.sum() == 1000.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int32, np.uint8, np.bool_])
def test_every_dtype_round_trips_through_numpy(dtype):
    array = (np.arange(12) % 3).astype(dtype).reshape(3, 4)
    back = np.asarray(kasmina.from_numpy(array).clone())
    assert back.dtype == array.dtype and (back == array).all()


def test_unsupported_numpy_input_raises_a_clear_error():
    with pytest.raises(kasmina.DTypeError, match="from_numpy.*complex|from_numpy.*format"):
        kasmina.from_numpy(np.zeros(3, dtype=np.complex64))
    with pytest.raises(kasmina.ShapeError, match="from_numpy.*negative"):
        kasmina.from_numpy(np.arange(4.0)[::-1])
    read_only = np.zeros(3, dtype=np.float32)
    read_only.flags.writeable = False
    with pytest.raises(kasmina.Error, match="from_numpy.*read-only"):
        kasmina.from_numpy(read_only)


def test_cpp_errors_arrive_as_python_exceptions_with_the_cpp_message():
    with pytest.raises(kasmina.ShapeError, match=r"matmul.*\[2, 3\].*\[4, 5\]"):
        kasmina.matmul(kasmina.ones([2, 3]), kasmina.ones([4, 5]))
    assert issubclass(kasmina.ShapeError, kasmina.Error) and issubclass(kasmina.Error, RuntimeError)


def test_backward_accumulates_gradients_into_leaves():
    w = kasmina.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    x = kasmina.ones([3, 2])
    loss = kasmina.sum(kasmina.matmul(x, w) * 2.0)
    loss.backward()
    np.testing.assert_allclose(np.asarray(w.grad), np.full((2, 2), 6.0))
    with kasmina.no_grad():
        assert not (w * 2.0).requires_grad
    kasmina.backward([kasmina.sum(w)])
    np.testing.assert_allclose(np.asarray(w.grad), np.full((2, 2), 7.0))


torch = pytest.importorskip("torch")
from torch.utils import dlpack as torch_dlpack  # noqa: E402


def test_torch_tensors_arrive_through_dlpack_without_a_copy():
    source = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()  # a strided view
    tensor = kasmina.from_dlpack(source)
    assert tensor.data_ptr() == source.data_ptr()
    assert tensor.shape == (4, 3) and tensor.strides == tuple(source.stride())
    source.add_(1.0)
    np.testing.assert_array_equal(np.asarray(tensor), source.numpy())
    capsule_tensor = kasmina.from_dlpack(torch_dlpack.to_dlpack(source))
    assert capsule_tensor.data_ptr() == source.data_ptr()


def test_kasmina_tensors_reach_torch_through_dlpack_without_a_copy():
    tensor = kasmina.randn([3, 4])
    assert tensor.__dlpack_device__() == (1, 0)
    shared = torch_dlpack.from_dlpack(tensor)
    assert shared.data_ptr() == tensor.data_ptr() and tuple(shared.shape) == (3, 4)
    tensor.fill_(2.0)
    assert bool((shared == 2.0).all())
    del tensor
    gc.collect()
    assert float(shared.sum()) == 24.0  # the storage lives while torch holds it
    ints = torch_dlpack.from_dlpack(kasmina.arange(6).view([2, 3]).t())
    assert ints.dtype == torch.int64 and ints.tolist() == [[0, 3], [1, 4], [2, 5]]
