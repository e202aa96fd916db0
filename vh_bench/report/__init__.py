"""Results → tables and plots: `records` (one record per results.json), `paper` (VASparse Tables 1
and 2), `table` (one row per run), `layout` (md/csv/LaTeX writers), `plot` (CHAIR vs tokens/s with
the Pareto front), `build` (what gets written), `callback` (Hydra, after every multirun)."""
