"""Study analysis: a study's images through the locked core (per-view detection, second stage,
CC/MLO linking and fusion) into a :class:`~cad.result.model.StudyResult`."""
