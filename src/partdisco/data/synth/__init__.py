"""The procedural synthetic data set's machinery, by room (the data set itself is ``data/synthetic.py``).

- :mod:`.primitives`: the sample's random stream, :class:`Paint`, :class:`Shape`, :class:`Scene`.
- :mod:`.creature`: part and keypoint names, colour families, the creature's canonical shapes.
- :mod:`.scene`: sampling a scene (background, distractors, pose, stress variants).
- :mod:`.render`: rendering a scene to image, parts, mask and keypoints.
"""
