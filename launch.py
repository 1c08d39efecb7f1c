"""Concord's command line: `launch.py [studio|import|judge|export|quality|user|erase|train|eval]` (default: studio).

Each command imports what it needs only when it runs, so starting the studio never loads torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("concord")


def _engine(args):
    from storage.db import make_engine, upgrade_database

    engine = make_engine(args.database_url)
    upgrade_database(engine)
    return engine


def cmd_studio(args) -> None:
    from storage.accounts import ensure_admin
    from storage.db import write_session
    from storage.demo import seed_demo
    from studio.app import launch_studio
    from studio.service import StudioService

    engine = _engine(args)
    with write_session(engine) as session, session.begin():
        created = ensure_admin(session=session)
    demo = seed_demo(engine)
    if created:
        print(f"\nFirst run: created user {created[0]!r} with password {created[1]!r}. It is shown only once.\n")
    if demo:
        print(f"Seeded the demo campaign {demo!r}.")
    launch_studio(StudioService(engine), concurrency=args.concurrency, server_name=args.host, server_port=args.port)


def cmd_import(args) -> None:
    from storage.imports import ImportFailed, import_file

    engine = _engine(args)
    try:
        report = import_file(
            args.file,
            engine=engine,
            campaign=args.campaign,
            fmt=args.format,
            known_as=args.known_as,
            drop_identical=args.drop_identical,
            source=args.source,
            license=args.license,
            model=args.model,
        )
    except ImportFailed as error:
        sys.exit(f"import failed, nothing was written: {error}")
    print(report.summary())


def cmd_pair(args) -> None:
    from storage.campaigns import campaign_id_for
    from storage.db import write_session
    from storage.pairing import form_pairs

    try:
        with write_session(_engine(args)) as session, session.begin():
            campaign_id = campaign_id_for(session=session, name=args.campaign)
            options = {"reference": args.reference, "k": args.k, "seed": args.seed, "evaluation": args.evaluation}
            report = form_pairs(session=session, campaign_id=campaign_id, strategy=args.strategy, **options)
    except ValueError as error:
        sys.exit(f"pair failed, nothing was written: {error}")
    print(report.summary())


def cmd_generate(args) -> None:
    from alignment.chat_models import GenerationFailed
    from alignment.generate import GenerateArguments, generate

    options = {name: getattr(args, name) for name in ("n", "temperature", "top_p", "max_new_tokens", "seed",
               "batch_size", "endpoint", "gguf_file", "api_key_env", "max_retries", "timeout_s", "dtype")}  # fmt: skip
    try:
        report = generate(GenerateArguments(args.campaign, args.model, **options), engine=_engine(args))
    except (ValueError, GenerationFailed) as error:
        sys.exit(f"generate failed: {error}")
    print(report.summary())


def _show_pair(task, username: str) -> None:
    turns = "\n".join(f"[{turn['role']}] {turn['content']}" for turn in task.messages)
    print(f"\nItem {task.assignment_id}, held by {username}. Prompt:\n{turns}\n")
    print(f"--- left ---\n{task.left_text}\n\n--- right ---\n{task.right_text}\n")
    print(
        f"Answer with --item {task.assignment_id} --choice 1-5 (1 left much better, 3 tie, 5 right much better) "
        f"[--both-bad] --scores {','.join(task.rubric)} (each 1-5) --confidence 1-5 --reasoning TEXT "
        f"(at least {task.min_reasoning_chars} characters)."
    )


def _seconds_since_shown(engine, assignment_id: int) -> float:
    from datetime import UTC

    from sqlmodel import Session

    from storage.models import Assignment, utcnow

    with Session(engine) as session:
        shown = session.get(Assignment, assignment_id).leased_at
    return max(0.0, (utcnow() - (shown if shown.tzinfo else shown.replace(tzinfo=UTC))).total_seconds())


def cmd_judge(args) -> None:
    from studio.access import PermissionDenied
    from studio.service import ConsentRequired, StudioService
    from studio.validation import JudgmentAnswer

    if args.choice is not None and args.item is None:
        sys.exit("judge failed: --choice answers an item: give --item N, the item shown")
    service = StudioService(_engine(args))
    try:
        rater = service.user_id(args.username)
    except PermissionDenied:
        sys.exit(f"judge failed: no active user is called {args.username!r} (create one: launch.py user NAME)")
    try:
        campaign = dict(service.campaigns_for(user_id=rater)).get(args.campaign)
        if campaign is None:
            raise PermissionDenied(f"{args.username!r} cannot judge in a campaign called {args.campaign!r}.")
        if args.accept_consent:
            service.accept_consent(rater, campaign, args.accept_consent)
        if args.choice is not None:
            task = service.next_pair(rater, campaign)
            if task is None or task.assignment_id != args.item:
                held = f"item {task.assignment_id}" if task else "no item"
                raise PermissionDenied(f"Item {args.item} is not the one {args.username} holds ({held}).")
            scores = [int(score) for score in args.scores.split(",")] if args.scores else []
            answer = JudgmentAnswer(
                choice=args.choice - 3, both_bad=args.both_bad, criteria=dict(zip(task.rubric, scores, strict=False)),
                reasoning=args.reasoning or "", confidence=args.confidence,
                time_on_task_s=_seconds_since_shown(service.engine, args.item),
            )  # fmt: skip
            result = service.submit_judgment(rater, args.item, answer)
            judged = service.progress(rater, campaign).judged_total
            print(f"recorded judgment {result.judgment_id} of item {args.item} ({judged} judged by {args.username})")
            if result.feedback is not None:
                verdict = "accepted" if result.feedback.answer_accepted else "not accepted"
                side = "left" if result.feedback.a_on_left else "right"
                print(f"calibration item: your answer is {verdict}. {result.feedback.explanation} (A was {side}.)")
        task = service.next_pair(rater, campaign)
    except ConsentRequired as consent:
        sys.exit(f"{consent}\n\n{consent.text}\n\nTo accept it, run again with --accept-consent {consent.version}.")
    except (PermissionDenied, ValueError) as error:  # ValidationFailed is a ValueError
        sys.exit(f"judge failed: {error}")
    if task is None:
        print(f"{args.username} has nothing left to judge in {args.campaign!r}.")
    else:
        _show_pair(task, args.username)


def cmd_eval_report(args) -> None:
    from rich.console import Console

    from storage.frames import evaluation_report
    from storage.quality.evaluation import plot_evaluation, render_evaluation

    try:
        report = evaluation_report(engine=_engine(args), campaign=args.campaign, judge=args.judge, n_boot=args.n_boot,
                                   seed=args.seed)  # fmt: skip
    except ValueError as error:
        sys.exit(f"eval-report failed: {error}")
    render_evaluation(report, Console())
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")
        print(f"wrote {args.json}")
    print(f"wrote {plot_evaluation(report, Path(args.plot or f'{args.campaign}-ratings.png'))}")


def cmd_export(args) -> None:
    from storage.export import export_campaign

    engine = _engine(args)
    try:
        result = export_campaign(
            engine=engine,
            campaign=args.campaign,
            kind=args.kind,
            out_dir=Path(args.out),
            policy=args.policy,
            keep_ties=args.keep_ties,
            keep_both_bad=args.keep_both_bad,
            use_prior=not args.no_prior,
            min_agreement=args.min_agreement,
            exclude_flagged_raters=args.exclude_flagged_raters,
            include_calibration=args.include_calibration,
            prior_margin=args.prior_margin,
            test_fraction=args.test_fraction,
            push_to_hub=args.push_to_hub,
        )
    except (ValueError, FileExistsError) as error:  # an export never writes into a folder that holds files
        sys.exit(f"export failed: {error}")
    print(result.summary())


def cmd_quality(args) -> None:
    from rich.console import Console

    from storage.frames import quality_report
    from storage.quality.report import plot_report, render_report

    try:
        report = quality_report(engine=_engine(args), campaign=args.campaign, n_boot=args.n_boot)
    except ValueError as error:
        sys.exit(f"quality report failed: {error}")
    render_report(report, Console())
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")
        print(f"wrote {args.json}")
    for path in plot_report(report, Path(args.plots)) if args.plots else []:
        print(f"wrote {path}")


def cmd_user(args) -> None:
    from storage.accounts import create_user, new_password
    from storage.db import write_session
    from storage.models import UserCreate

    engine = _engine(args)
    password = new_password()
    domains = [d.strip() for d in args.domains.split(",") if d.strip()]
    try:
        with write_session(engine) as session, session.begin():
            user = UserCreate(username=args.username, password=password, role=args.role, domains=domains)
            created = create_user(session=session, user=user)
            created.hf_username = args.hf_username  # lets them sign in with Hugging Face on a Space
    except ValueError as error:  # a taken name; pydantic's ValidationError is a ValueError too
        sys.exit(f"user failed: {error}")
    print(f"created {args.role} {args.username!r} with password {password!r} (shown only once)")


def cmd_password(args) -> None:
    from storage.accounts import new_password, set_password
    from storage.db import write_session
    from storage.erasure import user_id_of

    password = new_password()
    try:
        with write_session(_engine(args)) as session, session.begin():
            user_id = user_id_of(session=session, username=args.username)
            set_password(session=session, user_id=user_id, password=password, actor_id=None, must_change=True)
    except ValueError as error:
        sys.exit(f"password failed: {error}")
    print(f"one-time password for {args.username!r}: {password!r} (shown only once; their sessions ended, and they "
          "choose a new password when they next log in)")  # fmt: skip


def cmd_erase(args) -> None:
    from storage.db import write_session
    from storage.erasure import erase_user, user_id_of

    try:
        with write_session(_engine(args)) as session, session.begin():
            user_id = user_id_of(session=session, username=args.username)
            report = erase_user(session=session, user_id=user_id, mode=args.mode, actor_id=None)
    except ValueError as error:
        sys.exit(f"erase failed: {error}")
    print(report.summary())


def cmd_train(args) -> None:
    from alignment.runner import train

    if args.database_url:
        args.overrides += ["--database_url", args.database_url]
    resume = args.resume or "--resume" in args.overrides  # after the recipe, argparse leaves it among the overrides
    try:
        run = train(args.recipe, [arg for arg in args.overrides if arg != "--resume"], resume=resume)
    except (ValueError, FileExistsError) as error:  # RecipeError and NotReady are ValueErrors
        sys.exit(f"train failed: {error}")
    if run is not None:  # None on the other processes of an accelerate launch
        headline = {name: value for name, value in run.metrics.items() if name != "eval"}
        print(f"training run {run.name!r} finished in {run.output_path}: {json.dumps(headline)}")


def cmd_eval(args) -> None:
    from alignment.evaluate import evaluate_run, find_run_folder, score_pairs

    try:
        run_dir = find_run_folder(args.run, engine=_engine(args))
        result = score_pairs(run_dir, args.pairs) if args.pairs else evaluate_run(run_dir)
    except ValueError as error:  # ImportFailed (a pairs file it cannot read) is a ValueError
        sys.exit(f"eval failed: {error}")
    print(json.dumps({name: value for name, value in result.items() if name != "eval"}, indent=2))


def cmd_score(args) -> None:
    from alignment.score import score_campaign

    try:
        result = score_campaign(engine=_engine(args), campaign=args.campaign, run=args.run, mc_dropout=args.mc_dropout)
    except ValueError as error:
        sys.exit(f"score failed: {error}")
    print(json.dumps(result, indent=2))


def cmd_runs(args) -> None:
    from rich.console import Console
    from sqlmodel import Session

    from storage.campaigns import campaign_id_for
    from storage.runs import render_runs, run_rows, runs_json

    with Session(_engine(args)) as session:
        try:
            campaign_id = campaign_id_for(session=session, name=args.campaign) if args.campaign else None
        except ValueError as error:
            sys.exit(f"runs failed: {error}")
        rows = run_rows(session=session, campaign_id=campaign_id)
    if args.json:
        print(runs_json(rows))
    else:
        render_runs(rows, Console(width=None if sys.stdout.isatty() else 200))


def _add_training_commands(commands) -> None:
    train = commands.add_parser("train", help="train a model from a recipe: recipes/tiny/dpo.yaml --key value ...")
    train.add_argument("recipe", help="recipe YAML (see recipes/README.md)")
    train.add_argument("--resume", action="store_true", help="continue the run named by run_name from its checkpoint")
    train.add_argument("overrides", nargs=argparse.REMAINDER, help="--key value pairs overriding the recipe")
    train.set_defaults(func=cmd_train)

    evaluate = commands.add_parser("eval", help="recompute a training run's held-out metrics, or score a pairs file")
    evaluate.add_argument("run", help="the training run's name (or its folder)")
    evaluate.add_argument(
        "--pairs",
        metavar="FILE",
        help="score this preference file with the run's reward model or "
        "DPO policy (JSONL/Parquet prompt/chosen/rejected, or any format import reads)",
    )
    evaluate.set_defaults(func=cmd_eval)

    score = commands.add_parser(
        "score", help="score every pair of a campaign with a reward-model run (active selection, judge, label errors)"
    )
    score.add_argument("--campaign", required=True)
    score.add_argument("--run", required=True, help="a finished reward-model run of this database")
    score.add_argument("--mc-dropout", type=int, default=0, metavar="N",
                       help="also score each pair N times with dropout on and store the margin's spread")  # fmt: skip
    score.set_defaults(func=cmd_score)

    runs = commands.add_parser("runs", help="training runs with state, metrics and lineage (as the studio's Runs tab)")
    runs.add_argument("--campaign", help="only the runs that learned from this campaign")
    runs.add_argument("--json", action="store_true", help="print them as JSON instead of a table")
    runs.set_defaults(func=cmd_runs)


def _add_generate_command(commands) -> None:
    gen = commands.add_parser(
        "generate", help="N responses per prompt of a campaign from local models or OpenAI-compatible endpoints",
        description="Model specs, multi-turn prompts, resuming and the key's variables: docs/generate.md.",
    )  # fmt: skip
    gen.add_argument("--campaign", required=True)
    gen.add_argument(
        "--model", action="append", required=True, metavar="SPEC",
        help="[NAME=]hub id, folder, run:NAME or pkg:PKG[/SUB], optionally #FILE.gguf; or [NAME=]MODEL@BASE_URL "
        "(an OpenAI-compatible endpoint); repeat for several models",
    )  # fmt: skip
    gen.add_argument("--n", type=int, default=1, help="responses per prompt and model")
    gen.add_argument("--temperature", type=float, default=0.7, help="0 is greedy")
    gen.add_argument("--top_p", "--top-p", type=float, default=1.0)
    gen.add_argument("--max_new_tokens", "--max-new-tokens", type=int, default=256, help="per turn")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--batch-size", type=int, default=8, help="items per batch and concurrent endpoint requests")
    gen.add_argument("--endpoint", metavar="BASE_URL", help="serves every model that names no URL: http://HOST/v1")
    gen.add_argument("--api-key-env", metavar="VAR", help="variable holding the endpoint's key (default: "
                     "$CONCORD_OPENAI_API_KEY, else $OPENAI_API_KEY)")  # fmt: skip
    gen.add_argument("--gguf-file", help="GGUF file inside the folder of every local model that names none")
    gen.add_argument("--max-retries", type=int, default=4, help="retries of a failed endpoint request, with backoff")
    gen.add_argument("--timeout-s", type=float, default=120.0, help="seconds an endpoint request may take")
    gen.add_argument("--dtype", default="auto", help="local weights: auto (bfloat16 on GPU, float32 on CPU), ...")
    gen.set_defaults(func=cmd_generate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="concord", description=__doc__.splitlines()[0])
    database_help = "default: $CONCORD_DATABASE_URL or SQLite under ./concord-data/"
    parser.add_argument("--database-url", help=database_help)
    parser.set_defaults(func=cmd_studio, host=None, port=None, concurrency=8)
    commands = parser.add_subparsers(dest="command")

    studio = commands.add_parser("studio", help="start the rater and lead studio (the default)")
    studio.add_argument("--host", default=None, help="interface to listen on (default: 127.0.0.1)")
    studio.add_argument("--port", type=int, default=None, help="port (default: 7860 or the next free one)")
    studio.add_argument(
        "--concurrency", type=int, default=8,
        help="events handled at once per handler outside the rater and lead queue groups (see studio.app)",
    )  # fmt: skip
    studio.set_defaults(func=cmd_studio)

    imp = commands.add_parser(
        "import",
        help="import prompts, pairs or demonstrations into a campaign",
        description="Every format, field and limit ($CONCORD_IMPORT_*): docs/import.md.",
    )
    imp.add_argument("file", help="a file (JSONL, CSV, Parquet, HH-RLHF, OASST trees), a dataset folder or name")
    imp.add_argument("--campaign", required=True, help="campaign name (created if missing)")
    imp.add_argument(
        "--format",
        help="prompts | turns | pairs | responses | kto | hh-rlhf | oasst | trl | sharegpt (default: detected)",
    )
    imp.add_argument(
        "--known-as",
        default="prior",
        choices=["prior", "calibration", "none"],
        help="what a known preference becomes: a prior label, a calibration item, or nothing",
    )
    imp.add_argument("--drop-identical", action="store_true", help="skip pairs whose two responses are identical")
    imp.add_argument("--source", help="provenance recorded on every row (default: the file name)")
    imp.add_argument("--license", help="license recorded on every row")
    imp.add_argument("--model", help="who wrote a response set's responses, when the file does not say")
    imp.set_defaults(func=cmd_import)

    pair = commands.add_parser("pair", help="form pairs from a campaign's stored responses (storage.pairing)")
    pair.add_argument("--campaign", required=True)
    pair.add_argument(
        "--strategy", required=True, choices=["all-models", "vs-reference", "random-k"],
        help="every pairing of models per prompt, every model against --reference, or --k pairs per prompt",
    )  # fmt: skip
    pair.add_argument("--reference", metavar="MODEL", help="the model every other meets (vs-reference)")
    pair.add_argument("--k", type=int, help="pairs per prompt (random-k)")
    pair.add_argument("--seed", type=int, default=0, help="draws the sides and random-k's ties")
    pair.add_argument("--evaluation", action="store_true", help="make it a blind evaluation (kind evaluation)")
    pair.set_defaults(func=cmd_pair)

    _add_generate_command(commands)

    judge = commands.add_parser(
        "judge", help="judge a campaign's pairs from the terminal: shows the pair you hold, or records your answer",
        description="Without --choice: show the pair USERNAME holds (the same one until it is answered). With "
        "--choice: record the answer to that item, then show the next. Checked like the studio's Compare tab.",
    )  # fmt: skip
    judge.add_argument("username")
    judge.add_argument("--campaign", required=True)
    judge.add_argument("--item", type=int, help="the item shown, which the answer is for")
    judge.add_argument(
        "--choice", type=int, choices=range(1, 6), metavar="1-5",
        help="1 left much better, 2 left better, 3 tie, 4 right better, 5 right much better (the studio's keys)",
    )  # fmt: skip
    judge.add_argument("--both-bad", action="store_true", help="neither response would be acceptable to send")
    judge.add_argument("--scores", help="the campaign's rubric scores, 1-5 each, in the order shown: 4,5,5")
    judge.add_argument("--confidence", type=int, default=3, choices=range(1, 6), metavar="1-5")
    judge.add_argument("--reasoning", help="why, so that another rater could check it")
    judge.add_argument("--accept-consent", type=int, metavar="VERSION", help="accept this version of the consent text")
    judge.set_defaults(func=cmd_judge)

    exp = commands.add_parser("export", help="export a campaign as a TRL-ready dataset")
    exp.add_argument("--campaign", required=True)
    exp.add_argument("--kind", required=True, choices=["sft", "preference", "reward", "kto"])
    exp.add_argument("--out", required=True, help="output folder")
    exp.add_argument(
        "--policy", default="majority", choices=["majority", "mean", "weighted"],
        help="how judgments combine: most votes, mean preference, or Dawid-Skene competence-weighted",
    )  # fmt: skip
    exp.add_argument("--keep-ties", action="store_true", help="keep pairs whose consensus is a tie (reward only)")
    exp.add_argument("--keep-both-bad", action="store_true", help="keep pairs most raters flagged both-bad")
    exp.add_argument("--no-prior", action="store_true", help="leave out pairs labelled only at import time")
    exp.add_argument(
        "--min-agreement", type=float, default=0.0, metavar="FLOAT",
        help="drop judged pairs where fewer than this share of judgments agree with the consensus (0..1)",
    )  # fmt: skip
    exp.add_argument(
        "--exclude-flagged-raters", action="store_true",
        help="leave out, before consensus, raters flagged under the campaign's calibration settings",
    )  # fmt: skip
    exp.add_argument(
        "--include-calibration", default="none", choices=["none", "gold", "votes"],
        help="calibration (gold) items: left out (default), labelled by their gold answer, or by the raters' votes",
    )  # fmt: skip
    exp.add_argument(
        "--prior-margin", type=float, default=0.0, metavar="FLOAT",
        help="reward margin of pairs labelled only at import time (kind reward; default 0: the import says no "
        "strength)",
    )  # fmt: skip
    exp.add_argument("--test-fraction", type=float, default=0.1, help="share of prompts in the test split")
    exp.add_argument("--push-to-hub", metavar="REPO", help="also push the dataset and its card to the Hub")
    exp.set_defaults(func=cmd_export)

    quality = commands.add_parser("quality", help="agreement, calibration and rater report of a campaign")
    quality.add_argument("--campaign", required=True)
    quality.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    quality.add_argument("--plots", metavar="DIR", help="also write PNG plots into this folder")
    quality.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for confidence intervals")
    quality.set_defaults(func=cmd_quality)

    report = commands.add_parser("eval-report", help="Bradley-Terry ratings of the models a campaign compares")
    report.add_argument("--campaign", required=True)
    report.add_argument("--plot", metavar="PNG", help="where to write the plot (default: CAMPAIGN-ratings.png)")
    report.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    report.add_argument("--judge", metavar="RUN", help="the reward-model run shown as a judge beside the raters "
                        "(default: the run that scored the campaign last; see launch.py score)")  # fmt: skip
    report.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the intervals")
    report.add_argument("--seed", type=int, default=0, help="seeds the bootstrap")
    report.set_defaults(func=cmd_eval_report)

    user = commands.add_parser("user", help="create a user with a generated password")
    user.add_argument("username")
    user.add_argument("--role", default="rater", choices=["rater", "lead", "admin"])
    user.add_argument("--domains", default="", help="comma-separated domains the user is qualified in")
    user.add_argument("--hf-username", default=None, help="their Hugging Face account, for sign-in on a Space")
    user.set_defaults(func=cmd_user)

    password = commands.add_parser("password", help="give a user a one-time password (an admin's reset)")
    password.add_argument("username")
    password.set_defaults(func=cmd_password)

    erase = commands.add_parser("erase", help="erase a user's data on request (storage.erasure)")
    erase.add_argument("username")
    erase.add_argument(
        "--mode", required=True, choices=["remove", "anonymise"],
        help="remove: delete their judgments and writing; anonymise: keep them, de-identified",
    )  # fmt: skip
    erase.set_defaults(func=cmd_erase)

    _add_training_commands(commands)
    for command in commands.choices.values():  # before or after the command: `launch.py studio --database-url ...`
        command.add_argument("--database-url", default=argparse.SUPPRESS, help=database_help)
    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
