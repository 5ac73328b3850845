"""Zero-downtime rolling update of the app hosts behind the Caddy load balancers (LB-01, LB-02).

``scripts/rolling_update.py`` is the command line; the pieces:

* ``rollout.engine``     - the rollout itself: batches, capacity rules, rollback, report;
* ``rollout.readiness``  - the wait for a fresh environment before the first step (AWS);
* ``rollout.contract``   - what ``app-deploy`` must do on a host (read this to implement it);
* ``rollout.hosts``      - running the contract on local hosts (inventory file);
* ``rollout.aws``        - discovery by EC2 tags and SSM Run Command on AWS;
* ``rollout.caddy_admin``- Caddy's admin API (over HTTP, or over SSM on each LB);
* ``rollout.inventory``  - the local inventory format;
* ``rollout.locking``    - one rollout at a time;
* ``rollout.lab``        - local Caddys + app hosts on loopback, for tests and the benchmark.

Importing this package imports nothing else: the host-side helpers start fast.
"""
