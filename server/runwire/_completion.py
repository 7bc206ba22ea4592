"""Shell completion scripts for `runwire`, written from its argument parser so they cannot drift."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["SHELLS", "completion_script"]

SHELLS = ("bash", "zsh", "fish")


def _commands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> dict[str, argparse.ArgumentParser]:
    """Command path (`run`, `runs list`) → its parser, for every leaf and group."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:  # argparse has no public walk over subparsers
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = f"{prefix}{name}"
                found[path] = sub
                found.update(_commands(sub, f"{path} "))
    return found


def _options(parser: argparse.ArgumentParser) -> list[str]:
    """Long options, and the choices of positionals (`completion bash`)."""
    return [o for a in parser._actions for o in a.option_strings if o.startswith("--")] + [
        str(c)
        for a in parser._actions
        if not a.option_strings and a.choices and not isinstance(a, argparse._SubParsersAction)
        for c in a.choices
    ]


def _takes_file(action: argparse.Action) -> bool:
    return action.type is Path or action.metavar in {"FILE", "PEM"} or action.dest == "flow"


def _file_options(parser: argparse.ArgumentParser) -> list[str]:
    return [o for a in parser._actions if _takes_file(a) for o in a.option_strings]


def _choices(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    return {
        o: [str(c) for c in a.choices]
        for a in parser._actions
        if a.choices and not isinstance(a, argparse._SubParsersAction)
        for o in a.option_strings
    }


def _help(parser: argparse.ArgumentParser) -> dict[str, str]:
    return {
        name: str(choice.help or "")
        for a in parser._actions
        if isinstance(a, argparse._SubParsersAction)
        for choice in a._choices_actions
        for name in [choice.dest]
    }


def _bash(parser: argparse.ArgumentParser) -> str:
    commands = _commands(parser)
    cases = []
    for path, sub in sorted(commands.items()):
        children = [p.split()[-1] for p in commands if p.startswith(path + " ")]
        words = " ".join(children + _options(sub))
        choice_cases = "".join(
            f'            {opt}) COMPREPLY=($(compgen -W "{" ".join(values)}" -- "$cur")); return;;\n'
            for opt, values in _choices(sub).items()
        ) + "".join(
            f'            {opt}) COMPREPLY=($(compgen -f -- "$cur")); return;;\n'
            for opt in _file_options(sub)
        )
        positional_file = any(_takes_file(a) for a in sub._actions if not a.option_strings)
        cases.append(
            f'        "{path}")\n'
            f'            case "$prev" in\n{choice_cases}            esac\n'
            f'            words="{words}"; files={int(positional_file)};;\n'
        )
    top = " ".join([p for p in commands if " " not in p] + _options(parser))
    return f"""# bash completion for runwire; load with: source <(runwire completion bash)
_runwire() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local path="" word words="{top}" files=0 i
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        [[ $word == -* ]] && continue
        case "${{path:+$path }}$word" in
{"".join(f'            "{p}") path="{p}";;{chr(10)}' for p in sorted(commands))}        esac
    done
    case "$path" in
{"".join(cases)}    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
    [[ $files == 1 && $cur != -* ]] && COMPREPLY+=($(compgen -f -- "$cur"))
    return 0
}}
complete -F _runwire runwire
"""


def _zsh(parser: argparse.ArgumentParser) -> str:
    return (
        "# zsh completion for runwire; load with: source <(runwire completion zsh)\n"
        "autoload -U +X bashcompinit && bashcompinit\n" + _bash(parser).split("\n", 1)[1]
    )


def _fish(parser: argparse.ArgumentParser) -> str:
    commands = _commands(parser)
    lines = ["# fish completion for runwire; load with: runwire completion fish | source"]
    top = [p for p in commands if " " not in p]
    for name, text in _help(parser).items():
        lines.append(
            f"complete -c runwire -f -n '__fish_use_subcommand' -a {name} -d {_quote(text)}"
        )
    for path, sub in sorted(commands.items()):
        words = path.split()
        condition = " && ".join(f"__fish_seen_subcommand_from {w}" for w in words)
        if len(words) == 1 and path not in top:
            continue
        for name, text in _help(sub).items():
            lines.append(f"complete -c runwire -f -n '{condition}' -a {name} -d {_quote(text)}")
        choices = _choices(sub)
        for action in sub._actions:
            longs = [o[2:] for o in action.option_strings if o.startswith("--")]
            if not longs or longs[0] == "help":
                continue
            extra = ""
            opt = f"--{longs[0]}"
            if opt in choices:
                extra = f" -x -a {_quote(' '.join(choices[opt]))}"
            elif _takes_file(action):
                extra = " -r -F"
            elif action.nargs != 0:
                extra = " -x"
            lines.append(
                f"complete -c runwire -n '{condition}' -l {longs[0]}{extra}"
                f" -d {_quote(str(action.help or '').split('(')[0].strip())}"
            )
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for `shell` (bash, zsh or fish)."""
    return {"bash": _bash, "zsh": _zsh, "fish": _fish}[shell](parser)
