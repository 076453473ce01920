"""`svctrace learn`: an offline course for the CKA exam, checked by the engine: lessons, troubleshooting drills
(`learn drill`) and a kubectl-like view of a snapshot's objects (`learn show`)."""

from __future__ import annotations

import sys

import typer

from svctrace.cli import app

tools = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                    context_settings={"help_option_names": ["-h", "--help"]})


@tools.command("drill")
def drill_cmd(
    seed: int | None = typer.Option(None, "--seed", help="The drill's seed (the same seed, the same drill); "
                                    "default: a new one, printed."),
    cls: str | None = typer.Option(None, "--class", help="The failure class (see --list); default: the seed picks."),
    timed: bool = typer.Option(False, "--timed", help="Exam pace: the answer counts only within 8 minutes."),
    directory: str | None = typer.Option(None, "--dir", help="Where to write the drill's snapshot (default "
                                         "./svctrace-drill-CLASS-SEED)."),
    answer: str | None = typer.Option(None, "--answer", help="Your root cause: its letter."),
    fix: str | None = typer.Option(None, "--fix", help="Your fix: a YAML file (- for stdin) that patches objects "
                                   "as `kubectl patch` does (kind, metadata.name, the changed fields)."),
    list_: bool = typer.Option(False, "--list", help="List the drill classes and your results."),
    output: str = typer.Option("text", "-o", "--output", help="text or json."),
) -> None:
    """A broken cluster to diagnose and repair; the engine grades the repair by simulating it."""
    from svctrace.learn import run_drill

    if output not in ("text", "json"):
        raise typer.BadParameter("-o is text or json")
    raise typer.Exit(run_drill(seed=seed, cls=cls, directory=directory, timed=timed, answer=answer, fix=fix,
                               list_only=list_, as_json=output == "json", stdin=sys.stdin, stdout=sys.stdout))


@tools.command("show")
def show_cmd(
    what: list[str] = typer.Argument(..., help="KIND, KIND/NAME or KIND NAME as kubectl spells them "
                                     "(svc, deploy, pods, endpointslices, nodes, netpol, ...)."),
    namespace: str | None = typer.Option(None, "-n", "--namespace", help="The namespace (default: default)."),
    all_namespaces: bool = typer.Option(False, "-A", "--all-namespaces", help="Every namespace."),
    snapshot: str = typer.Option(..., "--snapshot", help="The snapshot (a drill's directory, a bundle, demo)."),
    output: str = typer.Option("table", "-o", "--output", help="table, yaml or json."),
) -> None:
    """The objects of a snapshot, like `kubectl get KIND[/NAME] -o yaml`."""
    from svctrace.learn import run_show

    if output not in ("table", "yaml", "json", "wide"):
        raise typer.BadParameter("-o is table, yaml or json")
    raise typer.Exit(run_show(" ".join(what), namespace, all_namespaces, snapshot, output, sys.stdout))


@app.command("learn", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def learn_cmd(
    ctx: typer.Context,
    lesson: str | None = typer.Argument(None, help="A lesson (id, number, alias or unique prefix); default: the "
                                        "next one not done. `drill` and `show` are the troubleshooting drills and "
                                        "the object view (svctrace learn drill --help).", show_default=False),
    list_: bool = typer.Option(False, "--list", help="List the lessons and what is done."),
    reset: bool = typer.Option(False, "--reset", help="Forget the progress."),
    answer: str | None = typer.Option(None, "--answer", help="Answer a lesson's questions without a prompt: one "
                                      "letter per question, comma-separated (b,a,c); exit 0 all right, 1 not."),
    output: str | None = typer.Option(None, "-o", "--output", help="json: a lesson's questions (or, with --answer, "
                                      "the verdicts) as JSON."),
) -> None:
    """Short lessons on Services and kube-proxy, each ending with questions the engine checks; troubleshooting
    drills (`svctrace learn drill`) graded by simulating your fix."""
    if lesson in ("drill", "show"):
        argv = [lesson, *ctx.args]
        if answer is not None:
            argv += ["--answer", answer]
        if output is not None:
            argv += ["-o", output]
        if list_:
            argv.append("--list")
        tools(argv, prog_name="svctrace learn", standalone_mode=True)
        return
    if ctx.args:
        raise typer.BadParameter(f"unexpected {' '.join(ctx.args)}")
    if answer is not None or output == "json":
        if lesson is None:
            raise typer.BadParameter("--answer and -o json need a LESSON")
        from svctrace.learn import run_answer

        raise typer.Exit(run_answer(lesson, answer, as_json=output == "json", stdout=sys.stdout))
    from svctrace.learn import run_learn

    raise typer.Exit(run_learn(lesson, list_only=list_, reset=reset, stdin=sys.stdin, stdout=sys.stdout,
                               state_dir=None))
