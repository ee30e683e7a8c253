"""The standard layers and optimizers against PyTorch: same weights in, same outputs and gradients out."""
import numpy as np
import pytest

import kasmina

torch = pytest.importorskip("torch")


def copy_weights(torch_module, kasmina_module):
    """Loads the torch module's state dict (parameters and buffers, by PyTorch's names) into kasmina's."""
    state = {name: kasmina.from_numpy(value.detach().numpy().copy()) for name, value in torch_module.state_dict().items()}
    kasmina_module.load_state_dict(state)


def assert_close(kasmina_tensor, torch_tensor, tolerance=1e-5):
    np.testing.assert_allclose(np.asarray(kasmina_tensor.detach()), torch_tensor.detach().numpy(),
                               rtol=tolerance, atol=tolerance)


def check_forward_and_gradients(torch_module, kasmina_module, input_shape, train=True):
    copy_weights(torch_module, kasmina_module)
    torch_module.train(train)
    kasmina_module.train(train)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(input_shape).astype(np.float32)
    torch_x = torch.tensor(x, requires_grad=True)
    kasmina_x = kasmina.tensor(x, requires_grad=True)
    torch_y, kasmina_y = torch_module(torch_x), kasmina_module(kasmina_x)
    assert kasmina_y.shape == tuple(torch_y.shape)
    assert_close(kasmina_y, torch_y)
    upstream = rng.standard_normal(tuple(torch_y.shape)).astype(np.float32)
    torch_y.backward(torch.from_numpy(upstream))
    kasmina_y.backward(kasmina.from_numpy(upstream))
    assert_close(kasmina_x.grad, torch_x.grad, 1e-4)
    kasmina_parameters = dict(kasmina_module.named_parameters())
    torch_parameters = dict(torch_module.named_parameters())
    assert kasmina_parameters.keys() == torch_parameters.keys()
    for name, parameter in torch_parameters.items():
        assert_close(kasmina_parameters[name].grad, parameter.grad, 1e-4)
    for name, buffer in torch_module.named_buffers():  # running statistics after a training step
        assert_close(dict(kasmina_module.named_buffers())[name], buffer)


def test_linear_matches_torch():
    check_forward_and_gradients(torch.nn.Linear(6, 4), kasmina.nn.Linear(6, 4), (5, 6))


def test_conv2d_matches_torch():
    check_forward_and_gradients(torch.nn.Conv2d(3, 4, 3, stride=2, padding=1),
                                kasmina.nn.Conv2d(3, 4, 3, stride=2, padding=1), (2, 3, 7, 7))


def test_layer_norm_matches_torch():
    torch_norm = torch.nn.LayerNorm(8)
    with torch.no_grad():  # non-trivial affine parameters
        torch_norm.weight.uniform_(0.5, 1.5)
        torch_norm.bias.uniform_(-0.5, 0.5)
    check_forward_and_gradients(torch_norm, kasmina.nn.LayerNorm(8), (4, 3, 8))


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_batch_norm_2d_matches_torch(train):
    torch_norm = torch.nn.BatchNorm2d(3)
    with torch.no_grad():  # running statistics that differ from the batch's
        torch_norm.running_mean.uniform_(-1, 1)
        torch_norm.running_var.uniform_(0.5, 2)
        torch_norm.weight.uniform_(0.5, 1.5)
    check_forward_and_gradients(torch_norm, kasmina.nn.BatchNorm2d(3), (4, 3, 5, 5), train=train)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_batch_norm_1d_matches_torch(train):
    torch_norm = torch.nn.BatchNorm1d(5, momentum=None)  # cumulative average
    check_forward_and_gradients(torch_norm, kasmina.nn.BatchNorm1d(5, momentum=None), (6, 5), train=train)


@pytest.mark.parametrize("name", ["AdamW", "SGD"])
def test_optimizer_steps_match_torch(name):
    torch_layer, kasmina_layer = torch.nn.Linear(4, 3), kasmina.nn.Linear(4, 3)
    copy_weights(torch_layer, kasmina_layer)
    options = {"AdamW": dict(lr=0.01, weight_decay=0.1), "SGD": dict(lr=0.1, momentum=0.9, nesterov=True)}[name]
    torch_optimizer = getattr(torch.optim, name)(torch_layer.parameters(), **options)
    kasmina_optimizer = getattr(kasmina.optim, name)(kasmina_layer.parameters(), **options)
    x = np.random.default_rng(2).standard_normal((8, 4)).astype(np.float32)
    torch_x, kasmina_x = torch.tensor(x), kasmina.tensor(x)
    for _ in range(3):
        torch_optimizer.zero_grad()
        (torch_layer(torch_x) ** 2.0).sum().backward()
        torch_optimizer.step()
        kasmina_optimizer.zero_grad()
        kasmina.sum(kasmina_layer(kasmina_x) ** 2.0).backward()
        kasmina_optimizer.step()
    assert_close(kasmina_layer.weight, torch_layer.weight)
    assert_close(kasmina_layer.bias, torch_layer.bias)
