"""`llorch completion bash|zsh|fish`: a shell completion script, generated from the
command-line parser itself (so it always matches the commands and options).

    eval "$(llorch completion bash)"                       # ~/.bashrc
    eval "$(llorch completion zsh)"                        # ~/.zshrc (via bashcompinit)
    llorch completion fish > ~/.config/fish/completions/llorch.fish

`command_tree` walks the parser (pure): for each command path (`""`, `pools`,
`provision model`, ...) its subcommands, the choices of its first positional and its
options. The scripts complete those words; paths and model references fall back to
file names.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Node", "add_parser", "command_tree", "script"]

SHELLS = ("bash", "zsh", "fish")


@dataclass
class Node:
    words: list[str] = field(default_factory=list)  # subcommands and positional choices
    options: list[str] = field(default_factory=list)
    helps: dict[str, str] = field(default_factory=dict)


def command_tree(parser: argparse.ArgumentParser, path: str = "") -> dict[str, Node]:
    node = Node()
    tree = {path: node}
    for action in parser._actions:
        if action.option_strings:
            node.options.extend(o for o in action.option_strings if o.startswith("--"))
        elif isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                node.words.append(name)
                node.helps[name] = helps.get(name, "")
                tree.update(command_tree(sub, f"{path} {name}".strip()))
        elif action.choices and not node.words:
            node.words.extend(str(c) for c in action.choices)
    return tree


def _bash(tree: dict[str, Node]) -> str:
    entries = "\n".join(
        f"    [{shlex.quote(path or '_')}]={shlex.quote(' '.join(n.words + n.options))}"
        for path, n in sorted(tree.items())
    )
    return f"""# llorch completion for bash (and zsh through bashcompinit)
_llorch_complete() {{
  local -A table=(
{entries}
  )
  local path="" word i
  for ((i = 1; i < COMP_CWORD; i++)); do
    word="${{COMP_WORDS[i]}}"
    [[ $word == -* ]] && continue
    if [[ -n ${{table["${{path:+$path }}$word"]+x}} ]]; then path="${{path:+$path }}$word"; fi
  done
  local cur="${{COMP_WORDS[COMP_CWORD]}}"
  local words="${{table[${{path:-_}}]}}"
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
  if [[ ${{#COMPREPLY[@]}} -eq 0 ]]; then COMPREPLY=($(compgen -f -- "$cur")); fi
}}
complete -o default -F _llorch_complete llorch
"""


def _zsh(tree: dict[str, Node]) -> str:
    return "autoload -U +X bashcompinit && bashcompinit\n" + _bash(tree)


def _fish(tree: dict[str, Node]) -> str:
    lines = ["# llorch completion for fish", "complete -c llorch -f"]
    for path, node in sorted(tree.items()):
        words = path.split()
        if not words:
            condition = "__fish_use_subcommand"
        else:
            condition = " ; and ".join(f"__fish_seen_subcommand_from {w}" for w in words)
        for word in node.words:
            described = node.helps.get(word, "")
            help_part = f" -d {shlex.quote(described)}" if described else ""
            lines.append(f"complete -c llorch -n {shlex.quote(condition)} -a {word}{help_part}")
        for option in node.options:
            lines.append(f"complete -c llorch -n {shlex.quote(condition)} -l {option[2:]}")
    return "\n".join(lines) + "\n"


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    tree = command_tree(parser)
    return {"bash": _bash, "zsh": _zsh, "fish": _fish}[shell](tree)


def add_parser(commands: Any, root: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("completion", help="print a shell completion script")
    parser.add_argument("shell", choices=SHELLS)

    def run(args: argparse.Namespace) -> int:
        print(script(args.shell, root), end="")
        return 0

    parser.set_defaults(handler=run)
