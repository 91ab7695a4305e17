SELECT id, name, role, salary FROM staff ORDER BY id;
SELECT COUNT(*), SUM(salary) FROM staff;
