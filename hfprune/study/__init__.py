"""The oracle-pruning study: plan, trials, typed records, the store, tasks, and the runner that ties them."""
