"""``clibd serve``: a local web app to classify specimens in the browser (photos and/or
barcodes against a reference library) and to browse a run's evaluation. A part above
``eval`` (it uses embed, index and eval's files); see docs/architecture.md."""
