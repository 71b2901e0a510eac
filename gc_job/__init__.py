"""The lifecycle GC (one sweep per CronJob run).

Pure core: ``plan`` (rows + run states + live claims + now + policy -> decisions) and
``report`` (results -> log lines, summary, exit status). Shells: ``executor`` (applies a
plan through race-safe transitions) and ``sweep`` (lock, adopt, plan, act, settle, report).
"""
