from django.apps import AppConfig


class FhirConfig(AppConfig):
    name = "omnicare.fhir"
    label = "fhir"

    def ready(self) -> None:
        # Access sits below fhir and reads the clinical record through its own interface
        # (access.directory): the store installs its implementation here, in every process that sets Django up.
        from omnicare.access.directory import directory_register  # noqa: PLC0415 - the registry is ready only now

        from .directory import FhirDirectory  # noqa: PLC0415 - the app registry is ready only now

        directory_register(FhirDirectory())
