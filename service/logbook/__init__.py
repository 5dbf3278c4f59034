"""What the service saw, kept: each answered item goes to the prediction log (:mod:`predlog`, written by one
thread a worker off the request's path: :mod:`service.logbook.writer`), and every item is counted into its
version's drift window (:mod:`service.logbook.drift`), exported to Prometheus."""
