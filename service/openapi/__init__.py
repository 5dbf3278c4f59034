"""The API document at ``/docs.json``: BentoML's generated document corrected (:mod:`.document`), the
project's routes (:mod:`.project`), the Open Inference Protocol's (:mod:`.oip`) and the shadows' (:mod:`.shadow`)."""
