"""Serving a plan: Ray Serve deployments that realize it, and the load generator that measures it.

:mod:`.protocol` is the HTTP contract; :mod:`.shares` the step-level share scheduler; :mod:`.spec`
what a plan and its table say to serve; :mod:`.worker` the process that owns a device's models;
:mod:`.app` the Ray Serve application; :mod:`.server` the server's set-up (the library call behind
``genedge serve``, and the application builder of Ray's ``serve run``); :mod:`.background` the server as a
child process for a script that drives it over HTTP; :mod:`.loadtest` the load
generator's runner, with its schedule (:mod:`.loadtest_schedule`), HTTP client
(:mod:`.loadtest_client`), result directory (:mod:`.loadtest_layout`) and result documents
(:mod:`.loadtest_document`); :mod:`.predict` and :mod:`.measured` the plan's prediction at the
offered rates, and the comparison.
"""
