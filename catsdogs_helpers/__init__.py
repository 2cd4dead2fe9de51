"""Helpers for the Cats vs Dogs notebook series: ``from catsdogs_helpers import config, plotting``.

The lessons' modules, in the order the data flows:

- ``config``: paths, the parameters (one table, one :class:`config.RunConfig`), seeds.
- ``workflow``: each notebook's work as reusing calls (``start``, ``ensure_split``, ``train_run``).
- ``downloading``: a resumable, verified download and a safe extraction (01).
- ``layouts``: where the labels come from: class folders, file names or a CSV.
- ``validating``: a verdict for every file, and the manifest (02).
- ``duplicates``: exact and near-identical copies, across classes too (02).
- ``splitting``: a stratified, seeded split that keeps copies together (02).
- ``images``: decoding photos safely, at reduced scale.
- ``transforms``: notebook 03's Albumentations pipelines, and the evaluation preprocessing.
- ``datasets``: the decoded cache and the seeded loaders.
- ``models``: ResNet-9 and torchvision's models, pretrained or not.
- ``devices``: the device, mixed precision, batches to model input.
- ``training``: the step, the epoch, the optimiser and schedule, ``fit`` (04).
- ``runs``: the run folder: identity, conflicts, history, summary, the runs table.
- ``evaluation``: test metrics, test-time augmentation, the predictions table (05).
- ``calibration``: reliability, temperature scaling, a threshold for a goal (05).
- ``explaining``: Grad-CAM heat maps (05).
- ``predicting``: your own photos through the test split's preprocessing (05).
- ``plotting``: every figure the notebooks show.
- ``widgets``: the photo upload in notebook 05.
- ``plumbing``: atomic files, locks, progress bars, a parallel map.

``tools``, which no lesson needs to read: ``series`` (papermill), ``trainer`` (command line),
``distributed`` (torchrun), ``export`` (ONNX, TorchScript), ``predict`` (``catsdogs-predict``).
"""

__version__ = "0.1.0"
