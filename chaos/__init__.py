"""The chaos campaign: real workers, beat, Redis and fake Bento under seeded random faults, then a check that
nothing was lost, nothing invalid reached Bento, every duplicate has a legitimate cause and stays within the
README's copy bound, poison is isolated and the queue drains. ``make chaos`` (``python -m chaos``) runs one.

- ``plan``: the seeded fault schedule (pure: the same seed gives the same faults);
- ``stack``: the processes (redis-server with AOF, FakeBento, celery workers, celery beat);
- ``producers``: ``track()`` and ``send_event.delay()`` at a steady rate, and the ledger of what was sent;
- ``faults``: the injectors, and the evidence kills leave for the checker;
- ``campaign``: the run: faults, healing, the drain, what Bento and Redis hold at the end;
- ``check``: pure checks over those observations (the reasoning about duplicates is there);
- ``report``: the table.
"""
