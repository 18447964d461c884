"""nbval runs these notebooks under the smoke profile, in a fresh work folder (set before any kernel starts)."""
import os
import tempfile

os.environ.setdefault("FUSIONKIT_PROFILE", "smoke")
os.environ.setdefault("FUSIONKIT_WORKDIR", tempfile.mkdtemp(prefix="fusionkit-nbval-"))
for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[variable] = "1"
