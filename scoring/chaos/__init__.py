"""Chaos experiments against the scoring graph: under the loss of any one service, the stream goes on, every event
is answered exactly once, answers stay inside the budget, and the system heals when the service returns.

- `client`: the resilient open-loop stream (reconnects, re-sends unacknowledged ids) and its per-event ledger;
- `faults`: kill -9, SIGSTOP, latency/jitter and dropped connections through the fault proxy, Redis restarted empty;
- `targets`: where faults go: local processes (`LocalTarget`) or compose containers (`ComposeTarget`, Docker SDK);
- `experiment`: one experiment's timeline and its report; `runner`: `scoring chaos`; `pytest_plugin`: fixtures.
"""
