"""Every name longtail gives an MLflow metric, tag, param or artifact folder: defined here once, imported everywhere.

A name appears as a string literal only in this module; the code that writes a value and the code
that reads it back (the leaderboard, `longtail run`'s summary, the model registry) share the constant.
"""

# --- MLflow's own tag names (the UI reads them) --------------------------------------------------
DESCRIPTION_TAG = "mlflow.note.content"
SOURCE_NAME_TAG = "mlflow.source.name"
SOURCE_TYPE_TAG = "mlflow.source.type"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
PARENT_RUN_TAG = "mlflow.parentRunId"
# MLflow 3 opens an experiment on its GenAI overview unless the experiment says it trains models.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
CUSTOM_MODEL_DEVELOPMENT = "custom_model_development"

# --- The pipeline run a run belongs to, on a cluster or under kfp.local --------------------------
KFP_RUN_ID_TAG = "kfp.run_id"
KFP_PIPELINE_TAG = "kfp.pipeline_name"
# The MLflow run KFP's own MLflow integration opened for the task (MLFLOW_RUN_ID in the pod).
KFP_TASK_RUN_TAG = "kfp.task_run_id"

# --- Training: per-epoch curves (also the Keras log and history.json keys), params and tags ------
VAL_LOSS = "val_loss"
VAL_ACCURACY = "val_accuracy"
# val_macro_f1 is under evaluate.target_prior (what picks the best epoch); _plain is the val split as drawn.
VAL_MACRO_F1 = "val_macro_f1"
VAL_MACRO_F1_PLAIN = "val_macro_f1_plain"
POSTHOC_TAU = "posthoc_tau"
VAL_MACRO_F1_BEFORE_POSTHOC = "val_macro_f1_before_posthoc"
VAL_MACRO_F1_AFTER_POSTHOC = "val_macro_f1_after_posthoc"
# The tau with the best val figure (tune adopts it only when its gain over tau 0 is clear), and the
# paired bootstrap 95% interval of that gain.
POSTHOC_BEST_TAU = "posthoc_tau_val_best"
POSTHOC_GAIN_LOW = "val_macro_f1_posthoc_gain_low"
POSTHOC_GAIN_HIGH = "val_macro_f1_posthoc_gain_high"
# Params beside the flattened config: the dataset facts the seed log wrote by hand (docs/seed-log.md "EXP3").
DATA_CLASSES_PARAM = "data.classes"
DATA_TRAIN_SAMPLES_PARAM = "data.train_samples"
DATA_VAL_SAMPLES_PARAM = "data.val_samples"
WEIGHTS_MIN_PARAM = "weights.min"
WEIGHTS_MAX_PARAM = "weights.max"
# The dtype policy train.precision resolved to on the machine that trained (auto: its GPUs or CPU).
PRECISION_USED_PARAM = "train.precision_used"
BATCH_SIZE_USED_PARAM = "train.batch_size_used"  # per replica: train.batch_size, or less by train.min_steps_per_epoch
# Whether that training compiled its steps with XLA (train.jit_compile resolved; auto: CPU float32).
JIT_COMPILE_USED_PARAM = "train.jit_compile_used"
# The epochs param the leaderboard reads back, and the target prior `longtail run` prints (flattened config keys).
EPOCHS_KEY = "train.epochs"
TARGET_PRIOR_PARAM = "evaluate.target_prior"
# Params every run differs in by construction (never a sweep "knob").
SEED_RUN_PARAM = "train.seed_run"
DATASET_FINGERPRINT_PARAM = "dataset.fingerprint"
# Tags of a training run: the step that opened it, its data and its model (the last two as config keys).
STEP_TAG = "longtail.step"
DATA_FINGERPRINT_TAG = "data.fingerprint"
DATA_IMAGE_SIZE_TAG = "data.image_size"
MODEL_NAME_TAG = "model.name"
# Artifact folder of the logged model (Keras and python_function flavours).
MODEL_ARTIFACT = "model"
# Its python_function flavour (longtail.served_model): the module MLflow loads it with, the folder in
# the MLflow model that holds the model directory it reads, the input column of image bytes (or uint8
# arrays) and the output column of class names (one more column per class holds its probability).
SERVED_MODEL_LOADER = "longtail.served_model"
SERVED_MODEL_DIR = "longtail"
SERVED_IMAGE_COLUMN = "image"
SERVED_LABEL_COLUMN = "label"

# --- Evaluation: eval_<metric> from the KFP metrics dict, the gate, and its artifacts -------------
EVAL_PREFIX = "eval_"
# eval_macro_f1 is under evaluate.target_prior, with its bootstrap interval; _plain is the split as drawn.
EVAL_MACRO_F1 = "eval_macro_f1"
EVAL_MACRO_F1_PLAIN = "eval_macro_f1_plain"
EVAL_MACRO_F1_LOW = "eval_macro_f1_low"
EVAL_MACRO_F1_HIGH = "eval_macro_f1_high"
EVAL_ACCURACY = "eval_accuracy"
EVAL_WEIGHTED_F1 = "eval_weighted_f1"
EVAL_GATE_TAG = "eval_gate"
GATE_PASSED = "passed"
GATE_FAILED = "failed"
GATE_REASON_TAG = "gate_reason"
EVAL_SPLIT_TAG = "eval_split"
EVALUATION_ARTIFACTS = "evaluation"
# The gate closed: the submit step wrote nothing, and says why.
SUBMISSION_TAG = "submission"
SUBMISSION_SKIPPED = "skipped"
SUBMISSION_SKIPPED_BECAUSE_TAG = "submission_skipped_because"

# --- Prediction: the submission written from the test split ---------------------------------------
PREDICT_N_ROWS = "predict_n_rows"
PREDICT_TTA_TAG = "predict_tta"
PREDICT_TTA_SHIFT_TAG = "predict_tta_shift"  # a fraction of the image side; 0 when no shifted views were averaged
PREDICT_SPLIT_TAG = "predict_split"
PREDICT_POSTHOC_TAU_TAG = "predict_posthoc_tau"
SUBMISSION_ARTIFACTS = "submission"
SUBMISSION_ARTIFACT_FILE = "submission.csv"

# --- Scores against held-out labels and the competition leaderboard -------------------------------
TEST_MACRO_F1 = "test_macro_f1"
LB_SCORE = "lb_score"
LB_MINUS_LOCAL = "lb_minus_local"

# --- A sweep's parent run --------------------------------------------------------------------------
SWEEP_TAG = "longtail.sweep"
SWEEP_PARENT = "parent"
SWEEP_KNOBS_TAG = "longtail.sweep_knobs"
N_EXPERIMENTS_PARAM = "n_experiments"
BEST_MACRO_F1 = "best_macro_f1"
BEST_TEST_MACRO_F1 = "best_test_macro_f1"
BEST_RUN_ID_TAG = "best_run_id"
BEST_EXPERIMENT_TAG = "best_experiment"
LARGEST_EFFECT_TAG = "largest_effect"
REGISTERED_MODEL_TAG = "registered_model"
LEADERBOARD_FILE = "leaderboard.md"

# --- A search (`longtail tune`): its parent run is a sweep parent too, its trials the children ----
STUDY_TAG = "longtail.study"  # on the parent and every trial run: the Optuna study's name
STUDY_SAMPLER_PARAM, STUDY_PRUNER_PARAM, STUDY_TRIALS_PARAM = "sampler", "pruner", "n_trials"
STUDY_PRUNE_AFTER_PARAM = "prune_after_percent"  # the share of each schedule the pruner compares from
SEARCH_PARAM_PREFIX = "search."  # the parent's params: search.<field> = its distribution
TRIAL_NUMBER_TAG = "longtail.trial"  # the Optuna trial number
TRIAL_STATE_TAG = "longtail.trial_state"  # complete | pruned | failed
TRIAL_STOPPED_EPOCH_TAG = "longtail.stopped_epoch"  # the epoch a pruned trial stopped after
BEST_CONFIG_FILE = "best.yaml"  # the best trial's config, which `longtail run` takes unchanged
STUDY_PLOTS = ("optimization_history.png", "param_importances.png", "slice.png")

# --- Model registry: aliases and version tags -----------------------------------------------------
# A sweep's best model is the champion; a single run registered on request is a candidate.
CHAMPION = "champion"
CANDIDATE = "candidate"
# The registered model a sweep's best model becomes, unless told otherwise (`--register-as`).
DEFAULT_REGISTERED_MODEL = "longtail-best"
VAL_MACRO_F1_TAG = VAL_MACRO_F1
TEST_MACRO_F1_TAG = TEST_MACRO_F1
CONFIG_TAG = "config"
