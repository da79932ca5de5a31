"""Pixels: heat maps coloured over the probe, labelled sheets of tiles, metric curves, the end-of-fit
timeline, and the composition of every image the monitor logs (which image under which tag).  It
draws from what :mod:`lightning_xai._compute` produced and hands finished images to whatever takes
them; it never writes a file or talks to a logger itself.
"""
