"""Write the manual page of a command (roff, man(7) macros) from its argparse parser.

    python packaging/manpage.py MODULE --section N [--see-also NAME:N]... [--files PATH=TEXT]...

MODULE (e.g. `sengadm.cli`) must define `build_parser() -> argparse.ArgumentParser`. The page
has NAME, SYNOPSIS, DESCRIPTION, OPTIONS, one section per argument group, COMMANDS (every
subcommand at every depth, with its usage, description, options and epilog), one section per
heading of the parser's epilog ("exit status:" becomes EXIT STATUS), FILES and SEE ALSO. New
subcommands therefore appear in the page by themselves.

The page is dated by SOURCE_DATE_EPOCH (set by dpkg-buildpackage from debian/changelog), so a
rebuild of the same release gives the same bytes.

argparse offers no public way to walk a parser, so this reads its documented-by-use private
attributes (`_actions`, `_action_groups`, `_choices_actions`), as argparse-manpage does.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

# argparse wraps usage lines to the terminal width; a fixed width makes the page reproducible.
USAGE_WIDTH = 78

_HEADING = re.compile(r"^(?P<title>[A-Za-z][A-Za-z0-9 ()/,_-]*):$")


@dataclass(frozen=True)
class PageInfo:
    """What the parser cannot say about itself."""

    section: str
    version: str
    date: dt.date
    see_also: tuple[tuple[str, str], ...] = ()
    files: tuple[tuple[str, str], ...] = ()


@dataclass
class _Block:
    """A piece of free text: filled prose, or lines to keep as written."""

    lines: list[str]
    preformatted: bool


@dataclass
class _EpilogSection:
    title: str | None
    blocks: list[_Block] = field(default_factory=list)


def escape(text: str) -> str:
    """Escape `text` for roff: backslashes, minus signs, and control characters at line start."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(
        "\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n")
    )


def _quote(text: str) -> str:
    """An escaped macro argument in double quotes."""
    return '"' + escape(text).replace('"', "\\(dq") + '"'


def blocks(text: str) -> list[_Block]:
    """Split free text into paragraphs; a paragraph with an indented line is kept as written."""
    result: list[_Block] = []
    for para in re.split(r"\n\s*\n", text.strip("\n")):
        lines = para.rstrip().split("\n")
        if not any(line.strip() for line in lines):
            continue
        indented = any(line[:1].isspace() for line in lines)
        result.append(_Block(lines if indented else [" ".join(x.strip() for x in lines)], indented))
    return result


def epilog_sections(epilog: str | None) -> list[_EpilogSection]:
    """Split an epilog at its headings (an unindented line ending in ':', e.g. 'exit status:')."""
    if not epilog:
        return []
    sections: list[_EpilogSection] = []
    current = _EpilogSection(None)
    pending: list[str] = []

    def flush() -> None:
        if pending:
            current.blocks.extend(blocks("\n".join(pending)))
            pending.clear()

    for line in epilog.strip("\n").split("\n"):
        match = _HEADING.match(line)
        if match:
            flush()
            if current.title is not None or current.blocks:
                sections.append(current)
            current = _EpilogSection(match["title"])
        else:
            pending.append(line)
    flush()
    if current.title is not None or current.blocks:
        sections.append(current)
    return sections


def render_blocks(items: Iterable[_Block]) -> Iterator[str]:
    """roff for free-text blocks: .PP paragraphs, preformatted ones in an indented .nf."""
    for block in items:
        if block.preformatted:
            yield ".PP"
            yield ".RS 4"
            yield ".nf"
            yield from (escape(line) for line in _dedent(block.lines))
            yield ".fi"
            yield ".RE"
        else:
            yield ".PP"
            yield escape(block.lines[0])


def _dedent(lines: list[str]) -> list[str]:
    indents = [len(x) - len(x.lstrip()) for x in lines if x.strip()]
    cut = min(indents, default=0)
    return [x[cut:] for x in lines]


def _metavar(action: argparse.Action) -> str | tuple[str, ...]:
    if action.metavar is not None:
        return action.metavar
    if action.choices is not None:
        return "{" + ",".join(str(c) for c in action.choices) + "}"
    if action.option_strings:
        return action.dest.upper()
    return action.dest


def format_args(action: argparse.Action) -> str:
    """The argument part of an option or positional, as in argparse's usage."""
    metavar = _metavar(action)
    names = list(metavar) if isinstance(metavar, tuple) else None

    def name(i: int = 0) -> str:
        return names[min(i, len(names) - 1)] if names else str(metavar)

    nargs = action.nargs
    if isinstance(nargs, int):
        return " ".join(name(i) for i in range(nargs))
    patterns = {
        None: "{0}",
        argparse.OPTIONAL: "[{0}]",
        argparse.ZERO_OR_MORE: "[{0} ...]",
        argparse.ONE_OR_MORE: "{0} [{1} ...]",
        argparse.REMAINDER: "{0} ...",
        argparse.PARSER: "{0} ...",
    }
    return patterns.get(nargs, "{0}").format(name(), name(1))


def expand_help(action: argparse.Action, prog: str) -> str:
    """The action's help with argparse's %(default)s-style substitutions done."""
    assert action.help is not None
    params: dict[str, object] = {
        k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS
    }
    params["prog"] = prog
    if params.get("choices") is not None:
        params["choices"] = ", ".join(str(c) for c in action.choices or ())
    return action.help % params if "%" in action.help else action.help


def invocation(action: argparse.Action) -> str:
    """roff for the term of an option or positional: bold option names, italic arguments."""
    if not action.option_strings:
        return f"\\fI{escape(format_args(action))}\\fR"
    takes_value = action.nargs != 0
    parts = []
    for opt in action.option_strings:
        text = f"\\fB{escape(opt)}\\fR"
        if takes_value:
            text += f" \\fI{escape(format_args(action))}\\fR"
        parts.append(text)
    return ", ".join(parts)


def _visible(actions: Iterable[argparse.Action], *, top: bool) -> list[argparse.Action]:
    """The arguments to document: not hidden, not subcommands, -h only at the top."""
    return [
        a
        for a in actions
        if a.help is not argparse.SUPPRESS
        and not isinstance(a, argparse._SubParsersAction)
        and (top or not isinstance(a, argparse._HelpAction))
    ]


def _subparsers(
    parser: argparse.ArgumentParser,
) -> list[argparse._SubParsersAction[argparse.ArgumentParser]]:
    return [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]


def subcommands(
    parser: argparse.ArgumentParser,
) -> list[tuple[str, str | None, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each direct subcommand, in registration order.

    Aliases are listed once, under the name they were registered with."""
    result: list[tuple[str, str | None, argparse.ArgumentParser]] = []
    for action in _subparsers(parser):
        helps = {
            choice.dest: choice.help
            for choice in action._choices_actions
            if choice.help is not argparse.SUPPRESS
        }
        seen: set[int] = set()
        for name, sub in action.choices.items():
            if id(sub) in seen:
                continue
            seen.add(id(sub))
            if name in helps or not action._choices_actions:
                result.append((name, helps.get(name), sub))
    return result


def usage(parser: argparse.ArgumentParser) -> str:
    """The parser's usage text without the 'usage: ' prefix, wrapped to USAGE_WIDTH."""
    formatter = argparse.HelpFormatter(parser.prog, width=USAGE_WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, "")
    return formatter.format_help().strip("\n")


def render_options(parser: argparse.ArgumentParser, heading: str, *, top: bool) -> Iterator[str]:
    """Every argument group of `parser` with visible arguments, each as a list of terms.

    At the top of the page a group is a section (.SH, the default groups merge into OPTIONS);
    inside a subcommand it is a bold line."""
    first = True
    for group in parser._action_groups:
        actions = _visible(group._group_actions, top=top)
        if not actions:
            continue
        default_group = group.title in ("options", "optional arguments", "positional arguments")
        title = heading if default_group else (group.title or heading)
        if top:
            if not (default_group and not first and title == heading):
                yield f".SH {_quote(title.upper())}"
        else:
            yield ".PP"
            yield f"\\fB{escape(title)}:\\fR"
        first = False
        if group.description:
            yield from render_blocks(blocks(group.description))
        for action in actions:
            yield ".TP"
            yield invocation(action)
            if action.help:
                yield escape(" ".join(expand_help(action, parser.prog).split()))


def render_command(parser: argparse.ArgumentParser, summary: str | None) -> Iterator[str]:
    """A .SS for one subcommand, then one for each of its own subcommands."""
    yield f".SS {_quote(parser.prog)}"
    yield ".nf"
    yield escape(usage(parser))
    yield ".fi"
    if parser.description:
        yield from render_blocks(blocks(parser.description))
    elif summary:
        yield ".PP"
        yield escape(summary)
    children = subcommands(parser)
    if children:
        yield ".PP"
        yield "\\fBsubcommands:\\fR"
        for name, helptext, _ in children:
            yield ".TP"
            yield f"\\fB{escape(name)}\\fR"
            if helptext:
                yield escape(helptext)
    yield from render_options(parser, "options", top=False)
    for section in epilog_sections(parser.epilog):
        if section.title:
            yield ".PP"
            yield f"\\fB{escape(section.title)}:\\fR"
        yield from render_blocks(section.blocks)
    for _, helptext, child in children:
        yield from render_command(child, helptext)


def render(parser: argparse.ArgumentParser, info: PageInfo) -> str:
    """The complete page of `parser`."""
    prog = parser.prog
    description = parser.description or ""
    summary = re.split(r"(?<=[a-z0-9)])\.\s", description, maxsplit=1)[0].rstrip(".")
    lines = [
        f".\\\" Generated by packaging/manpage.py from {prog}'s argument parser. Do not edit.",
        f".TH {prog.upper()} {info.section} {_quote(info.date.isoformat())} "
        f"{_quote('seng-gateway ' + info.version)} {_quote('seng-gateway manual')}",
        ".SH NAME",
        f"{escape(prog)} \\- {escape(summary)}",
        ".SH SYNOPSIS",
        ".nf",
        escape(usage(parser)),
        ".fi",
    ]
    if description:
        lines.append(".SH DESCRIPTION")
        lines.extend(render_blocks(blocks(description)))
    lines.extend(render_options(parser, "options", top=True))
    children = subcommands(parser)
    if children:
        lines.append(".SH COMMANDS")
        lines.append(".PP")
        lines.append("Every command accepts \\fB\\-h\\fR for its own help.")
        for name, helptext, _ in children:
            lines.append(".TP")
            lines.append(f"\\fB{escape(name)}\\fR")
            if helptext:
                lines.append(escape(helptext))
        for _, helptext, child in children:
            lines.extend(render_command(child, helptext))
    for section in epilog_sections(parser.epilog):
        lines.append(f".SH {_quote((section.title or 'notes').upper())}")
        lines.extend(render_blocks(section.blocks))
    if info.files:
        lines.append(".SH FILES")
        for path, text in info.files:
            lines.append(".TP")
            lines.append(f"\\fI{escape(path)}\\fR")
            lines.append(escape(text))
    if info.see_also:
        lines.append(".SH SEE ALSO")
        lines.append(",\n".join(f"\\fB{escape(n)}\\fR({escape(s)})" for n, s in info.see_also))
    return "\n".join(lines) + "\n"


def page_date() -> dt.date:
    """SOURCE_DATE_EPOCH's date (UTC) when set, else today's."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        return dt.datetime.fromtimestamp(int(epoch), dt.UTC).date()
    return dt.datetime.now(dt.UTC).date()


def _split(text: str, sep: str, what: str) -> tuple[str, str]:
    head, found, tail = text.partition(sep)
    if not found or not head or not tail:
        raise argparse.ArgumentTypeError(f"{what} must look like LEFT{sep}RIGHT: {text!r}")
    return head, tail


def main(argv: Sequence[str] | None = None) -> int:
    """Print the page of MODULE's parser to stdout."""
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    cli.add_argument("module", help="module with build_parser(), e.g. sengadm.cli")
    cli.add_argument("--section", default="1", help="manual section (default: 1)")
    cli.add_argument(
        "--see-also",
        action="append",
        default=[],
        type=lambda s: _split(s, ":", "--see-also"),
        metavar="NAME:SECTION",
    )
    cli.add_argument(
        "--files",
        action="append",
        default=[],
        type=lambda s: _split(s, "=", "--files"),
        metavar="PATH=TEXT",
    )
    args = cli.parse_args(argv)
    module = importlib.import_module(args.module)
    parser: argparse.ArgumentParser = module.build_parser()
    from sengd import __version__

    info = PageInfo(
        section=args.section,
        version=__version__,
        date=page_date(),
        see_also=tuple(args.see_also),
        files=tuple(args.files),
    )
    sys.stdout.write(render(parser, info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
