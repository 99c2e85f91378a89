"""A/B testing of a challenger (treatment) classifier against the champion (control).

Pure functions, no Dagster imports; one module per concern:

- `assignment`: the keyed-hash split of records into arms, and the sample-ratio-mismatch check;
- `design`: what is fixed before the first day (metrics, alpha, power, runtime, the minimum
  detectable effect from the champion's day-to-day variation);
- `inference`: per-day figures (the day is the unit of inference) and day-level bootstrap intervals;
- `sequential`: the always-valid confidence sequence over the daily looks;
- `guardrails`: each model at its own operating point (threshold);
- `decision`: promote / keep / inconclusive from all of the above;
- `report`: the plain-words report and flat metadata.

Why the day: records of one day share weather and schedules, so a record-level test treats
thousands of correlated records as independent and is far too confident (the record-level
McNemar rule this replaces promoted an equally good challenger in 16% of A/A replays at alpha 5%).
"""
