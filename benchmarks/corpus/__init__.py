"""An accuracy corpus for registration that the project does not control.

Two kinds of material, neither made by ``simulation/``:

- :mod:`.sources`: real photographs and micrographs shipped inside installed packages
  (scikit-image's bundled images, matplotlib's sample data), under transforms applied in
  real space (:mod:`.cases`: shift/rotate/scale by cubic-spline resampling of the larger
  image, then crop; never a circular shift), with noise, illumination gradients and blur.
- :mod:`.render`: a second cross-modal renderer written independently of ``simulation/``
  (it imports nothing from it): its own scene of particles, flakes, fibres and marker
  crosses, an SEM contrast (material + edge brightening, scan noise) and an optical
  contrast (inverted absorption, defocused PSF, vignetting, gamma, 8-bit), pixel-size
  ratios 3x-30x, partial overlap.

Sources are split into a *tuned* set (the only images looked at while choosing methods
and constants) and a *held-out* set (reported, never tuned on): see :data:`.sources.TUNED`
and :data:`.sources.HELD_OUT`; the renderer's seeds are split the same way
(:data:`.cases.TUNED_SEEDS`). :mod:`.evaluate` runs our ``Register`` (the device's code
path, :class:`~servers.RegistrationDS.core.RegistrationCore`) and the usual libraries on the
same cases and tabulates the errors.
"""
