"""Errors travel as (code, message, data) and come back as the same class."""

import pytest

from phxq import errors


@pytest.mark.parametrize("cls", list(errors.error_classes().values()))
def test_every_error_round_trips_through_wire_form(cls: type[errors.PhxqError]) -> None:
    original = cls("boom", {"k": 1})
    back = errors.from_wire(*original.to_wire())
    assert type(back) is cls
    assert back.message == "boom"
    assert back.data["k"] == 1


def test_not_master_keeps_its_hint() -> None:
    back = errors.from_wire(*errors.NotMaster(hint="127.0.0.1:7102").to_wire())
    assert isinstance(back, errors.NotMaster)
    assert back.hint == "127.0.0.1:7102"


def test_unknown_code_becomes_base_error_and_never_raises() -> None:
    back = errors.from_wire("martian", 42, ["not", "a", "dict"])
    assert type(back) is errors.PhxqError
    assert back.data["code"] == "martian"
    assert back.message == "42"


def test_codes_are_unique() -> None:
    classes = [errors.PhxqError, *errors._all_subclasses(errors.PhxqError)]
    assert len({c.code for c in classes}) == len(classes)
