"""The example plugin's own tests: gantool's contract checks, one per component."""

from gantool import testing


def test_generator():
    testing.check_generator("gantool-example:mlp", {"latent_dim": 8, "hidden": 16})


def test_discriminator():
    testing.check_discriminator("gantool-example:mlp", {"hidden": 16})


def test_dataset():
    testing.check_dataset("shapes", {"size": 32, "image_size": 16})


def test_metric():
    testing.check_metric("brightness_gap")


def test_loss():
    testing.check_loss("rpgan")


def test_augmentation():
    testing.check_augmentation("noise", {"sigma": 0.2, "anneal_steps": 10})


def test_optimizer():
    testing.check_optimizer("lion")


def test_scheduler():
    testing.check_scheduler("step_decay", {"every": 3})


def test_callback(tmp_path):
    run_dir = testing.check_callback("plateau", {"patience": 1}, tmp_path=tmp_path)
    assert (run_dir / "plateau.log").exists()


def test_resume_is_exact_with_every_training_component(tmp_path):
    testing.check_resume(
        tmp_path=tmp_path,
        loss={"type": "rpgan"},
        augment={"type": "noise", "anneal_steps": 4},
        optimizer={"generator": {"type": "lion"}, "discriminator": {"type": "lion"}},
        scheduler={"generator": {"type": "step_decay", "every": 2}},
    )


def test_cuda_graphs_capture_the_loss_and_the_noise_says_it_cannot_be_captured(tmp_path):
    assert testing.check_capturable(tmp_path=tmp_path / "loss", loss={"type": "rpgan"}) == []
    assert testing.check_capturable(tmp_path=tmp_path / "noise", augment={"type": "noise"}) == [
        "[augment] gantool-example:noise declares capturable = False"]
