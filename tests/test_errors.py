import inspect

from keel import errors


def _error_classes() -> list[type[errors.KeelError]]:
    return [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.KeelError) and c.__module__ == errors.__name__]


def test_every_error_is_drawn_in_the_tree_with_its_status() -> None:
    tree = errors.__doc__ or ""
    for cls in _error_classes():
        line = next((ln for ln in tree.splitlines() if f" {cls.__name__} " in ln + " "), None)
        assert line is not None, f"{cls.__name__} is not in the error tree of keel/errors.py"
        assert str(cls.http_status) in line, f"{cls.__name__}'s line does not show http_status {cls.http_status}"
        parent = cls.__mro__[1]
        if cls is not errors.KeelError:
            assert issubclass(parent, errors.KeelError)


def test_errors_defined_elsewhere_joined_the_tree() -> None:
    from keel.pipelines import StepFailed
    from keel.registry import ForbiddenError, GatesFailed

    assert StepFailed is errors.StepFailed and GatesFailed is errors.GatesFailed and ForbiddenError is errors.ForbiddenError
    assert (ForbiddenError.http_status, GatesFailed.http_status, StepFailed.http_status) == (403, 422, 422)
    assert issubclass(GatesFailed, errors.ValidationError) and issubclass(errors.WriteConflict, errors.ConflictError)
