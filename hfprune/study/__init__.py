"""Studies: one engine (:mod:`.runner`) for every study kind (:mod:`.registry`: oracle pruning in :mod:`.oracle`,
sparse training in :mod:`.sparse`), with the study directory, tasks, executors and progress they share."""
