from django.apps import AppConfig


class FhirConfig(AppConfig):
    name = "omnicare.fhir"
    label = "fhir"
