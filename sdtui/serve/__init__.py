"""`sdtui serve`: a deployment behind AUTOMATIC1111's web API, a third front end beside the app
and `--no-ui` over the same core (Session, outputs, settings).

    run      the command: refusals first, then the deployment, then the server
    http     HTTP on the standard library: basic auth, bounded bodies, JSON answers
    api      the A1111 routes
    fields   A1111 request bodies as sdtui requests, one behaviour per field
    answers  A1111 response shapes
    queue    one request at a time to the worker, first come first served
    pending  the queue on disk, so a restarted `sdtui serve` runs what the last one left
    child    `sdtui serve` as the app's child process (f2 on the prompt panel)
"""
