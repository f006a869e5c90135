"""The standard FID Inception weights: fetched once, verified, converted to safetensors, never unpickled.

No test touches the network: ``inception._download`` is replaced by a copy of a fabricated file
in the published layout (random weights, ``torch.save`` of a plain dict of tensors).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error

import pytest
import torch

from gantool.errors import GantoolError
from gantool_plugins.metrics import features as feats
from gantool_plugins.metrics import inception


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Random FID-Inception weights saved as pytorch-fid saved its file: keys of torchvision's
    Inception3 with 1008 classes, no AuxLogits; BatchNorm statistics away from their defaults so
    a mix-up of running mean and variance would change the features."""
    from torchvision.models.inception import Inception3

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = Inception3(num_classes=1008, aux_logits=False, init_weights=False)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    state = {k: v.clone() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path_factory.mktemp("published") / inception.FILE_NAME
    torch.save(state, path)
    return path, state


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private cache folder and a cold extractor memo."""
    monkeypatch.setenv("GANTOOL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(feats, "_EXTRACTORS", {})
    return tmp_path / "cache" / "weights"


def serve(monkeypatch, source, calls: list):
    """Downloads copy ``source``; ``calls`` records the URLs asked for."""

    def download(url, dst):
        calls.append(url)
        shutil.copyfile(source, dst)

    monkeypatch.setattr(inception, "_download", download)


def no_download(url, dst):
    raise AssertionError(f"unexpected download of {url}")


def files(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_is_verified_converted_and_later_read_from_safetensors_only(published, cache, monkeypatch):
    source, state = published
    calls = []
    serve(monkeypatch, source, calls)
    monkeypatch.setattr(inception, "SHA256", sha256(source))
    assert not feats.inception_available()

    ext = feats.get_extractor("inception")
    assert calls == [inception.URL]
    assert files(cache) == [inception.SAFETENSORS_NAME]  # no temp file and no .pth left
    assert feats.inception_available() and ext.variant == "fid" and ext.id.startswith("inception:fid:")
    from safetensors import safe_open

    with safe_open(str(cache / inception.SAFETENSORS_NAME), framework="pt") as f:
        assert f.metadata()["source_sha256"] == sha256(source)
        assert sorted(f.keys()) == sorted(state)

    # The converted copy computes exactly what the published state dict does.
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.random.fork_rng(devices=[]):
        net, _ = feats.build_inception(dict(state), source)
    expected = net.eval()(feats.resize(x, 299, antialias=False))
    got = ext.features(x)
    assert got.shape == (2, 2048) and torch.equal(got, expected)

    # A new process: only the safetensors copy is read, nothing is downloaded or unpickled.
    monkeypatch.setattr(feats, "_EXTRACTORS", {})
    monkeypatch.setattr(inception, "_download", no_download)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    assert torch.equal(feats.get_extractor("inception").features(x), expected)


def test_files_placed_by_hand_are_used_and_kept(published, cache, monkeypatch):
    from safetensors.torch import load_file, save_file

    source, state = published
    monkeypatch.setattr(inception, "_download", no_download)
    monkeypatch.setattr(inception, "SHA256", sha256(source))
    cache.mkdir(parents=True)
    shutil.copyfile(source, inception.pth_path())
    assert feats.inception_available()
    converted = inception.ensure_weights()
    assert files(cache) == sorted([inception.FILE_NAME, inception.SAFETENSORS_NAME])  # the user's .pth stays
    loaded = load_file(str(converted))
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)

    # A converted safetensors file placed by hand is taken as it is.
    for p in cache.iterdir():
        p.unlink()
    save_file({"fc.weight": torch.zeros(1008, 2048)}, str(inception.safetensors_path()))
    assert feats.inception_available() and inception.ensure_weights() == inception.safetensors_path()


def test_offline_says_in_one_line_what_to_download_and_where(cache, monkeypatch):
    calls = []

    def offline(url, dst):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(inception, "_download", offline)
    with pytest.raises(GantoolError) as err:
        feats.get_extractor("inception")
    message = str(err.value)
    assert err.value.exit_code == 2 and "\n" not in message and len(message) < 500
    assert f"save {inception.URL} as {inception.pth_path()}" in message
    assert "Temporary failure in name resolution" in message
    assert calls == [inception.URL, inception.MIRROR]  # pytorch-fid's release, then torch-fidelity's
    assert files(cache) == [] and not feats.inception_available()


def test_a_checksum_mismatch_is_refused_and_leaves_nothing(published, cache, monkeypatch):
    source, _ = published
    assert sha256(source) != inception.SHA256  # not the real weights
    serve(monkeypatch, source, [])
    with pytest.raises(GantoolError, match=r"SHA-256 is \w{16}\.\.\., not 6726825d0af5f729\.\.\.; refused and removed") as err:
        inception.ensure_weights()
    assert "\n" not in str(err.value)
    assert files(cache) == []

    # The same file placed by hand is refused too, but it is the user's: it stays.
    shutil.copyfile(source, inception.pth_path())
    with pytest.raises(GantoolError, match="not pytorch-fid's"):
        inception.ensure_weights()
    assert files(cache) == [inception.FILE_NAME]


class Payload:
    """Creates a folder when unpickled: proof that an object's code would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_a_pickle_holding_an_object_is_refused_by_weights_only_loading(cache, tmp_path, monkeypatch):
    marker = tmp_path / "payload-ran"
    cache.mkdir(parents=True)
    torch.save({"fc.weight": torch.zeros(1008, 2048), "extra": Payload(marker)}, inception.pth_path())
    monkeypatch.setattr(inception, "SHA256", sha256(inception.pth_path()))  # the checksum passes
    monkeypatch.setattr(inception, "_download", no_download)
    with pytest.raises(GantoolError, match="refused by weights-only loading") as err:
        inception.ensure_weights()
    assert "\n" not in str(err.value)
    assert not marker.exists()
    assert files(cache) == [inception.FILE_NAME]  # refused, not deleted, nothing converted


def test_features_match_torch_fidelity_on_the_same_weights(published, tmp_path, monkeypatch):
    """Tolerance: 1e-5 of the largest feature. torchvision's plain Inception blocks with the same
    weights differ by far more, so the check tells the FID pooling from the ImageNet one."""
    tf = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    from torchvision.models.inception import Inception3

    source, state = published
    # torch-fidelity's module names are torchvision's: the state dict maps one to one.
    monkeypatch.setattr(tf, "load_state_dict_from_url", lambda *a, **k: dict(state))
    with torch.random.fork_rng(devices=[]):
        theirs_net = tf.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
        plain = Inception3(num_classes=1008, aux_logits=False, transform_input=False, init_weights=False)
    plain.load_state_dict(dict(state))
    plain.fc = torch.nn.Identity()
    converted = tmp_path / inception.SAFETENSORS_NAME
    inception._convert(source, converted, sha256(source))
    ours_ext = feats.InceptionFeatures(converted)

    images = torch.randint(0, 256, (3, 3, 299, 299), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    scaled = (images.float() - 128) / 128  # torch-fidelity's input scaling; 299 px, so neither side resizes
    theirs = theirs_net(images)[0]
    ours = ours_ext.features(scaled)
    tolerance = 1e-5 * theirs.abs().max().item()
    assert theirs.shape == ours.shape == (3, 2048)
    assert (ours - theirs).abs().max().item() <= tolerance
    assert (plain.eval()(scaled) - theirs).abs().max().item() > 100 * tolerance
