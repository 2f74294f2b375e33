"""Alerts: fold matches into stories, apply subscription rules and deliver to channels once per story.

The worker (:mod:`alerts.worker`) consumes ``matches`` as the ``wirewatch-alerts`` group; per batch:

1. :mod:`alerts.stories` folds near-duplicates into one story per topic within ``story_window_s``
   (vector cosine or MinHash text resemblance; texts naming different places or people stay apart);
2. :mod:`alerts.rules` / :mod:`alerts.plan` decide per subscription: send, hold for a digest (digest mode,
   quiet hours, rate-limit overflow) or suppress, with the reason;
3. notifications go to the Redis outbox (:mod:`alerts.outbox`) before the offsets are committed;
4. :mod:`alerts.delivery` sends each through its channel (:mod:`alerts.channels`) under the idempotency
   ledger (:mod:`alerts.ledger`): claim, send, mark done; retries with backoff; per-destination budgets;
5. every attempt, hold and suppression goes to ``deliveries`` (:mod:`alerts.recorder`).

:mod:`alerts.digest` turns due held stories into one digest per subscription.
"""
