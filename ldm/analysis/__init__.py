"""Many run directories: collecting sweeps, tables, plots, statistics, budget curves and the claims engine.

Reads run directories through `ldm.rundir` only; never imports a model class or the run package.
"""
