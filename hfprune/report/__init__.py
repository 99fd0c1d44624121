"""Reporter building blocks: correlation statistics (Kendall tau, validity, anomaly and counterexample ratios),
bootstrap intervals, trial tables, regret, sparsity tables, frontier, plots and the markdown/JSON renderers. The
study kinds assemble their reports from them; ``hfprune report TABLE`` analyses any table with them."""
