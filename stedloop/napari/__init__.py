"""stedloop in napari (the optional extra ``stedloop[napari]``): an npe2 plugin whose manifest
is ``napari.yaml`` next to this file.

Nothing here imports napari at module level, and nothing else in stedloop imports this
package, so stedloop runs without napari installed.
"""
