"""Grid files, their validation, stage orchestration on Ray Tune and the `unlearn-grid` CLI."""
