import subprocess
import sys

from click.testing import CliRunner

from cli import __version__
from cli.main import cli


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_help_lists_commands_without_importing_torch():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from cli.main import cli\n"
        "r = CliRunner().invoke(cli, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'Usage' in r.output\n"
        "assert 'torch' not in sys.modules, 'diffconv --help imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_command_is_usage_error():
    result = CliRunner().invoke(cli, ["frobnicate"])
    assert result.exit_code == 2
    assert "frobnicate" in result.output


def test_cli_choice_lists_match_the_core():
    # cli.options repeats them so that --help needs no torch; they must not drift apart.
    from cli.options import MODES, PADDINGS
    from diffconv_core._validation import MODES as CORE_MODES
    from diffconv_core._validation import PADDINGS as CORE_PADDINGS

    assert set(MODES) == set(CORE_MODES)
    assert set(PADDINGS) == set(CORE_PADDINGS)
