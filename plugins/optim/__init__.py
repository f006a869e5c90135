"""Built-in plugin: optimizers and learning-rate schedules (registration only)."""

import gantool

_OPT = "gantool_plugins.optim.optimizers"
_SCHED = "gantool_plugins.optim.schedulers"


@gantool.hookimpl
def gantool_register_components(registry):
    registry.add("optimizer", "adam", f"{_OPT}:adam",
                 summary="Adam (Kingma & Ba 2014); DCGAN default lr 2e-4, betas (0.5, 0.999)")
    registry.add("optimizer", "adamw", f"{_OPT}:adamw",
                 summary="AdamW, decoupled weight decay (Loshchilov & Hutter 2019); lr 2e-4, weight_decay 0.01")
    registry.add("optimizer", "rmsprop", f"{_OPT}:rmsprop",
                 summary="RMSprop (Tieleman & Hinton 2012); WGAN weight-clipping default lr 5e-5")
    registry.add("optimizer", "sgd", f"{_OPT}:sgd",
                 summary="SGD with optional (Nesterov) momentum; lr 0.01")
    registry.add("scheduler", "constant", f"{_SCHED}:constant",
                 summary="Keep the optimizer's lr for the whole run")
    registry.add("scheduler", "linear", f"{_SCHED}:linear",
                 summary="Keep lr until start_step, then decay linearly to 0 at the end (pix2pix, BigGAN)")
    registry.add("scheduler", "cosine", f"{_SCHED}:cosine",
                 summary="Cosine decay from lr to min_lr over the run (Loshchilov & Hutter 2017)")
    registry.add("scheduler", "warmup", f"{_SCHED}:warmup",
                 summary="Linear warm-up from start_factor * lr to lr over warmup_steps, then constant")
