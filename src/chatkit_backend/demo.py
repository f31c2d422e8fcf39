"""Demo rows for the `erp-support` agent: a small directory per tenant."""

from chatkit_backend.store.employees import Employee, EmployeeDirectory

# Different tenants get different people: a lookup across tenants would show.
DIRECTORIES: dict[str, list[Employee]] = {
    "default": [
        Employee(1, "Ada Lovelace", "Chief Engineer", "R&D", "ada@example.com"),
        Employee(7, "Grace Hopper", "Staff Engineer", "Platform", "grace@example.com", 1),
        Employee(12, "Alan Turing", "Research Scientist", "R&D", "alan@example.com", 1),
        Employee(23, "Katherine Johnson", "Finance Lead", "Finance", "katherine@example.com"),
    ],
    "globex": [
        Employee(7, "Hank Scorpio", "CEO", "Executive", "hank@globex.example"),
    ],
}


async def load_demo_directory(directory: EmployeeDirectory, tenant_id: str) -> int:
    """Replace the tenant's directory with demo people; returns how many."""
    people = DIRECTORIES.get(tenant_id, DIRECTORIES["default"])
    await directory.replace_all(tenant_id, people)
    return len(people)
