"""Built-in gantool plugins, registered through the `gantool` entry-point group like any third-party plugin."""
