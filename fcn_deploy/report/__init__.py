"""Accuracy vs latency reports: `run.build_report` (build, evaluate, time), `write` (report.md/json/csv),
`plots` (pareto.png, per_class.png, matplotlib imported lazily), `samples` (side-by-side images)."""
