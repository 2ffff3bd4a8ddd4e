"""The role matrix on exports: naming a restricted field or filtering on it when creating an
export, the default field set, and downloading a developer's finished file that holds it (see
matrix.py for the matrix itself)."""

from __future__ import annotations

import csv
import io

from observatory_core.exports.jobs import EXPORT_DEFAULT_FIELDS, create_export, download_target
from observatory_core.filters.spec import FilterSpec
from tests.accounts.matrix import (
    ALL,
    FILTERS_OF,
    PRESENT,
    api,
    cases,
    core,
    may_see,
    scope_of,
    typed,
    unless_not_offered,
)


def path_export_create(world, role, field):
    """Naming the field, or filtering on it, when creating an export."""
    out = [
        api(
            world,
            role,
            "POST",
            "/export/traces",
            lambda got: field in got.json()["data"]["fields"],
            json={"filters": {"relative": None}, "fields": ["span_id", field]},
        ),
        core(
            lambda: create_export(
                world["engine"], scope_of(world, role), ALL, fields=["span_id", field]
            ),
            lambda job: field in job["fields"],
        ),
    ]
    for name in FILTERS_OF[field]:
        filters = {"relative": None, name: typed(name)}
        out.append(
            api(
                world,
                role,
                "POST",
                "/export/traces",
                lambda got, name=name: got.json()["data"]["filters"][name] == typed(name),
                json={"filters": filters, "fields": ["span_id"]},
            )
        )
        out.append(
            core(
                lambda filters=filters: create_export(
                    world["engine"],
                    scope_of(world, role),
                    FilterSpec.from_json(filters),
                    fields=["span_id"],
                ),
                lambda job: True,
            )
        )
    # the default field set: what the role may see, nothing more
    default = core(
        lambda: create_export(world["engine"], scope_of(world, role), ALL),
        lambda job: field in job["fields"],
    )
    return out + unless_not_offered(default, field, EXPORT_DEFAULT_FIELDS)


def path_export_download(world, role, field):
    """A developer's finished file holding the field, or selected by a filter on it."""
    jobs = [(world["jobs"][("field", field)], field)]
    jobs += [(world["jobs"][("filter", name)], None) for name in FILTERS_OF[field]]
    out = []
    for job_id, column in jobs:

        def holds(got, column=column):
            header = next(csv.reader(io.StringIO(got.text)))
            return column in header if column else len(got.text.splitlines()) > 1

        out.append(api(world, role, "GET", f"/export/jobs/{job_id}/download", holds))
        # the job itself says whether the caller may download it, and why not
        out.append(
            api(
                world,
                role,
                "GET",
                f"/export/jobs/{job_id}",
                lambda got: got.json()["data"]["download_refused"] is None,
            )
        )
        out.append(
            core(
                lambda job_id=job_id: download_target(
                    world["engine"], scope_of(world, role), job_id, world["export_dir"]
                ),
                lambda target, column=column: (
                    column in target[0].read_text().splitlines()[0].split(",") if column else True
                ),
            )
        )
    return out


WALKS = {"export_create": path_export_create, "export_download": path_export_download}


@cases(*WALKS)
def test_a_role_gets_a_field_on_a_path_only_when_it_may_see_it(world, role, field, path):
    outcomes = WALKS[path](world, role, field)
    assert outcomes, "the path produced nothing to judge"
    if may_see(role, field, path):
        assert set(outcomes) == {PRESENT}, outcomes
    else:
        assert PRESENT not in outcomes, outcomes
