"""One job: what train.py, evaluate.py (on one run) and sample.py run, from preflight to metrics.json.

Kept import-free: `ldm.run.runtime` must load before torch does (it sets the thread environment).
"""
