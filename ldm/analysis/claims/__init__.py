"""The claims engine: criteria (verdicts from pre-written criteria), render (REPORT.md), runner (running a
profile), estimate (the dry run's time), publish (docs/claims, the README summary, wandb)."""
