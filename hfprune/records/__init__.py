"""Trial records: one typed record per finished trial, appended durably to a study's ``trials.jsonl``.

Below every study kind and the reporter: studies write records, reports and progress read them.
"""
