"""A wrapped model trained from Python: kernels made and inspected, loaded into a seed, ramped in,
trained, with statistics and telemetry readable along the way."""
import numpy as np
import pytest

import kasmina
from kasmina import morph, nn, optim


@pytest.fixture
def store(tmp_path):
    return morph.DirectoryStore(str(tmp_path / "kernels"))


def make_model():
    kasmina.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


def test_kernel_artifacts_round_trip_through_bytes_store_and_inspection(store):
    artifact = morph.make_linear_bottleneck(16, 32, 8, alpha=0.25)
    data = artifact.to_bytes()
    kernel_id = store.write(data)
    assert kernel_id == morph.kernel_id(data) and store.contains(kernel_id) and store.list() == [kernel_id]
    assert morph.parse_kernel_id(morph.format_kernel_id(kernel_id)) == kernel_id
    parsed = morph.parse_artifact(store.read(kernel_id))
    assert parsed.kind == "linear" and parsed.suggested_alpha == 0.25
    assert parsed.parameter_count == 16 * 8 + 8 + 8 * 32 + 32
    description = morph.inspect_artifact(store.path_of(kernel_id))
    assert "linear-bottleneck" in description and "gelu" in description
    with pytest.raises(kasmina.ArtifactError):
        morph.parse_artifact(data[:-8], "truncated")


def test_wrapped_model_trains_with_a_seed_ramped_in(store):
    model = make_model()
    telemetry = morph.MemoryTelemetry()
    cache = morph.KernelCache(store)
    morphable = kasmina.wrap(model, cache=cache, telemetry=telemetry, telemetry_interval=5)
    assert morphable.kasmina_layers() == ["0", "2"]
    assert morphable.unsupported == ["1 (ReLU)"]

    x = kasmina.randn([128, 16])
    target = kasmina.tanh(kasmina.matmul(x, kasmina.randn([16, 4])))
    optimizer = optim.AdamW(morphable.parameters(), lr=1e-2)

    def train(steps):
        losses = []
        for _ in range(steps):
            optimizer.zero_grad()
            loss = kasmina.mse_loss(morphable(x), target)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses

    before = train(40)
    assert before[-1] < 0.5 * before[0]

    kernel_id = store.write(morph.make_linear_bottleneck(16, 32, 8))
    morphable.load_kernel("0", 0, kernel_id, alpha=0.0)
    morphable.ramp_alpha("0", 0, 0.3, 10)
    parameter_count = len(optimizer.parameters)
    optimizer.set_parameters(morphable.parameters())  # the kernel's weights train too
    assert len(optimizer.parameters) == parameter_count + 4
    kernel_weight = dict(morphable.module.named_parameters())["0.seeds.0.w0"]
    kernel_weight_before = np.asarray(kernel_weight).copy()

    after = train(40)
    assert np.isfinite(after).all() and after[-1] < before[-1]
    assert not np.array_equal(np.asarray(kernel_weight), kernel_weight_before)

    seed = morphable.layer("0").layer_stats()[0]
    assert seed.lifecycle == "ACTIVE" and seed.kernel_id == kernel_id
    assert seed.alpha == pytest.approx(0.3)
    stats = morphable.model_stats()
    assert stats.layers == 2 and stats.seeds == 8
    assert stats.seeds_by_lifecycle["ACTIVE"] == 1 and stats.seeds_by_lifecycle["DORMANT"] == 7
    assert stats.kernel_parameters == 16 * 8 + 8 + 8 * 32 + 32
    assert stats.cache.misses == 1 and stats.cache.entries == 1
    assert [report.seed for report in stats.per_layer["0"]] == [0, 1, 2, 3]
    reports = telemetry.reports()
    assert {report.layer for report in reports} == {"0", "2"} and all(r.step % 5 == 0 for r in reports)

    morphable.set_seed_alpha("0", 0, 0.1)
    assert morphable.layer("0").layer_stats()[0].alpha == pytest.approx(0.1)
    morphable.unload_kernel("0", 0)
    assert morphable.model_stats().seeds_by_lifecycle.get("ACTIVE", 0) == 0


def test_bad_controls_raise_errors_naming_the_problem(store):
    morphable = kasmina.wrap(make_model(), cache=morph.KernelCache(store))
    with pytest.raises(kasmina.Error, match="'0'.*'2'|0.*2"):
        morphable.layer("missing")
    conv_kernel = store.write(morph.make_conv_bottleneck(3, 4, 2, 3))
    with pytest.raises(kasmina.ArtifactError, match="kind"):
        morphable.load_kernel("0", 0, conv_kernel)
    assert morphable.layer("0").layer_stats()[0].lifecycle == "DORMANT"
