"""The synthetic shapes world: seeded scenes of coloured shapes (:mod:`.scene`), their language
(:mod:`.text`: captions, referring expressions, questions) and the datasets written from them in
the layouts of the real ones (:mod:`.world`: COCO, VQAv2, RefCOCO, folder datasets). It trains and
checks the bundled model ``ofa-tiny_shapes`` offline; the real readers are in :mod:`ofa_vl.data`."""
