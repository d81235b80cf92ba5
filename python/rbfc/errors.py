"""The one exception rbfc raises."""


class RbfcError(RuntimeError):
    """A spec that does not compile, an argument a kernel cannot take, or a
    failure of the library; the message says which and names the argument.
    `status` is the C API's status code when the library reported it."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status
